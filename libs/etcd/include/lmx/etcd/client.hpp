#pragma once

// A client of etcd's v3 API through its JSON gateway (HTTP/1.1 POSTs to /v3/...), with Beast and
// Boost.JSON: leases, key ranges, puts, deletes, transactions, compaction and watch streams.
// Keys and values are byte strings (base64 on the wire); revisions and lease ids are etcd's int64s.
//
// Every call goes to the endpoint that answered last and moves on to the next one in the list when
// that endpoint cannot be reached. A call that may already have changed etcd's state when its
// connection broke (put, delete, txn, revoke, compact) is not sent again: it fails with
// error::kind::outcome_unknown, and the caller decides (a txn guarded by its compares can be).

#include <boost/asio/any_io_executor.hpp>
#include <boost/asio/awaitable.hpp>

#include <chrono>
#include <cstdint>
#include <memory>
#include <stdexcept>
#include <string>
#include <string_view>
#include <variant>
#include <vector>

namespace lmx::etcd {

struct options {
    // "host:port", "http://host:port" or "https://host:port", tried in this order.
    std::vector<std::string> endpoints{};
    // https:// endpoints: a member's certificate must chain to a CA of ca_file (PEM; the system's
    // store when empty) and name the endpoint's host. cert_file and key_file (PEM, both or
    // neither): the client certificate a cluster with client-cert-auth asks for.
    std::string ca_file{};
    std::string cert_file{};
    std::string key_file{};
    std::chrono::milliseconds connect_timeout{2000};  // per endpoint
    std::chrono::milliseconds request_timeout{5000};  // one request's write and answer
};

class error : public std::runtime_error {
public:
    enum class kind {
        refused,          // etcd answered no: code() is its gRPC status (5 not found, 9 failed precondition, ...)
        unreachable,      // no endpoint answered; nothing was done
        outcome_unknown,  // the connection broke after the request went out: it may have been applied
        bad_reply,        // the answer was not what the API promises
    };
    error(kind k, int code, const std::string& what) : std::runtime_error(what), kind_(k), code_(code) {}
    kind which() const noexcept { return kind_; }
    int code() const noexcept { return code_; }

private:
    kind kind_;
    int code_;
};

struct key_value {
    std::string key{};
    std::string value{};
    std::int64_t create_revision = 0;
    std::int64_t mod_revision = 0;
    std::int64_t version = 0;
    std::int64_t lease = 0;
};

// Options are views: they are read when the call is made (before it first suspends).
struct range_options {
    std::string_view range_end{};  // empty: `key` alone; prefix_end(key): every key starting with it
    std::int64_t revision = 0;     // 0: the latest
    std::int64_t limit = 0;        // 0: no limit
    bool keys_only = false;
    bool count_only = false;
};

struct range_result {
    std::int64_t revision = 0;  // the store's revision when it was read
    std::vector<key_value> kvs{};
    std::int64_t count = 0;  // keys in the range (kvs may hold fewer: limit, count_only)
    bool more = false;
};

// The operations a transaction runs.
struct put_op {
    std::string key{};
    std::string value{};
    std::int64_t lease = 0;
};
struct delete_op {
    std::string key{};
    std::string range_end{};
};
struct range_op {
    std::string key{};
    range_options options{};
};
struct txn_request;
// A txn inside a txn. etcd decides the compares of every nested txn with the outer ones, against
// the store as it was before any operation ran; all of it gets one revision. A txn may not put or
// delete the same key twice, nested ones included.
struct txn_op {
    std::shared_ptr<const txn_request> txn{};
};
using op = std::variant<put_op, delete_op, range_op, txn_op>;

struct compare {
    enum class target : std::uint8_t { version, create_revision, mod_revision, value, lease };
    enum class result : std::uint8_t { equal, greater, less, not_equal };
    std::string key{};
    target what = target::create_revision;
    result is = result::equal;
    std::int64_t number = 0;  // version, revisions, lease
    std::string value{};      // value
    // Not empty: the compare holds for every key in [key, range_end), and an empty range compares
    // as a key that does not exist (every revision 0).
    std::string range_end{};
};

struct txn_request {
    std::vector<compare> compares{};
    std::vector<op> success{};  // run when every compare holds
    std::vector<op> failure{};  // run otherwise
};

struct op_result {
    enum class kind : std::uint8_t { put, deleted, range, txn } what = kind::put;
    std::int64_t deleted = 0;
    range_result range{};
    bool succeeded = false;              // txn: the branch that ran
    std::vector<op_result> responses{};  // txn: one per operation of that branch
};

struct txn_result {
    std::int64_t revision = 0;
    bool succeeded = false;
    std::vector<op_result> responses{};  // one per operation of the branch that ran
};

struct lease {
    std::int64_t id = 0;
    std::chrono::seconds ttl{};
};

struct watch_event {
    enum class type : std::uint8_t { put, del } what = type::put;
    key_value kv{};  // a delete carries the key and its mod_revision (the deletion's)
};

struct watch_batch {
    std::int64_t revision = 0;  // the store's revision when the batch was sent
    std::vector<watch_event> events{};
    bool created = false;  // the first batch: the watch is in place
    // The watch ended (for instance: its start revision was compacted away; compact_revision is
    // then the oldest revision it can start from). No batch follows.
    bool canceled = false;
    std::int64_t compact_revision = 0;
    std::string cancel_reason{};
};

// One watch on one connection of its own; events arrive in revision order.
class watch_stream {
public:
    struct impl;
    explicit watch_stream(std::unique_ptr<impl> i);
    watch_stream(watch_stream&&) noexcept;
    watch_stream& operator=(watch_stream&&) noexcept;
    ~watch_stream();

    // The next batch. Throws error (unreachable) when the connection ends; after a canceled batch
    // the stream is over and next() throws.
    boost::asio::awaitable<watch_batch> next();
    // Ends the stream: a next() under way fails.
    void close();

private:
    std::unique_ptr<impl> impl_;
};

// Every call reads its arguments before it first suspends: they need not outlive the call. Use a
// client from one thread at a time (its executor's); calls may run concurrently, each on a
// connection of its own.
class client {
public:
    // Throws std::invalid_argument on a bad endpoint or TLS file.
    client(boost::asio::any_io_executor ex, options o);
    client(const client&) = delete;
    client& operator=(const client&) = delete;
    ~client();

    boost::asio::awaitable<lease> grant_lease(std::chrono::seconds ttl);
    // The lease's remaining ttl after the renewal; zero when the lease no longer exists.
    boost::asio::awaitable<std::chrono::seconds> keep_alive(std::int64_t lease_id);
    // Revoking a lease that is gone already is not an error.
    boost::asio::awaitable<void> revoke_lease(std::int64_t lease_id);

    // Returns the revision of the put.
    boost::asio::awaitable<std::int64_t> put(std::string_view key, std::string_view value, std::int64_t lease = 0);
    boost::asio::awaitable<range_result> range(std::string_view key, range_options o = {});
    // Returns how many keys were deleted.
    boost::asio::awaitable<std::int64_t> delete_range(std::string_view key, std::string_view range_end = {});
    // With g++ 12, build `t` as a named object rather than a temporary inside the co_await
    // expression: that compiler copies an aggregate temporary with non-trivial members in a
    // co_await expression bitwise and destroys it twice.
    boost::asio::awaitable<txn_result> txn(const txn_request& t);
    boost::asio::awaitable<void> compact(std::int64_t revision);

    // Events on [key, range_end) (range_end empty: the key alone) from start_revision on (0: from
    // now). Starting at a compacted revision gives a canceled batch naming the compact revision.
    boost::asio::awaitable<watch_stream> watch(std::string_view key, std::string_view range_end,
                                               std::int64_t start_revision);

    // The endpoint the next call goes to first ("host:port").
    std::string endpoint() const;

    struct impl;

private:
    std::shared_ptr<impl> impl_;
};

// The end of the range holding every key that starts with `prefix` ("\0" for an empty prefix: all keys).
std::string prefix_end(std::string_view prefix);

}  // namespace lmx::etcd
