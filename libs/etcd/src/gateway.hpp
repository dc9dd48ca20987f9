#pragma once

// The JSON shapes of etcd's v3 gateway: request bodies built from our types, answers read back
// into them. Pure functions, no I/O. The gateway writes int64s as strings, leaves out fields at
// their zero value, and carries keys and values in base64.

#include <lmx/etcd/client.hpp>

#include <boost/json/fwd.hpp>

#include <optional>
#include <string>
#include <string_view>

namespace lmx::etcd::gateway {

std::string base64_encode(std::string_view bytes);
// nullopt when `text` is not base64 (standard alphabet, padded).
std::optional<std::string> base64_decode(std::string_view text);

std::string range_body(const std::string& key, const range_options& o);
std::string put_body(const put_op& p);
std::string delete_body(const delete_op& d);
std::string txn_body(const txn_request& t);
std::string watch_body(const std::string& key, const std::string& range_end, std::int64_t start_revision);

// Each reader throws error(bad_reply) on a shape the API does not promise.
std::int64_t read_int(const boost::json::object& o, std::string_view field);  // absent: 0
std::int64_t read_revision(const boost::json::object& answer);                // header.revision
range_result read_range(const boost::json::object& answer);
txn_result read_txn(const boost::json::object& answer);
watch_batch read_watch(const boost::json::object& message);  // one streamed {"result": ...}

// The error of a non-200 answer ({"error","code","message"}), or of an error inside a stream.
error read_error(const boost::json::value& answer, unsigned http_status);

}  // namespace lmx::etcd::gateway
