#pragma once

// The lock store over an etcd cluster (`lmx broker --store etcd://...`): several brokers share
// their lock state through it. Each request is a key under the prefix, ordered by its create
// revision; who holds is core::queue_rule's decision over those entries; each broker grants its
// own sessions' requests by a claim whose revision gives the fencing token; a broker's entries
// hang on its session lease, so they go when it dies. docs/design/ha.md has the design.
// Private to libs/broker.

#include <lmx/core/lock_store.hpp>

#include <boost/asio/any_io_executor.hpp>

#include <chrono>
#include <functional>
#include <memory>
#include <string>
#include <vector>

namespace lmx::detail {

struct etcd_store_options {
    std::vector<std::string> endpoints;  // "host:port" or http(s)://host:port
    std::string prefix = "/lmx/";
    std::chrono::seconds session_ttl{10};
    std::string ca_file, cert_file, key_file;  // TLS to etcd
    std::string broker_id;                     // unique per broker process
};

// `turn_done` is called after the store told the sink something outside a call of the broker's
// (a commit, a watch event, a lost lease): the broker then sends what was written.
std::unique_ptr<core::lock_store> make_etcd_store(boost::asio::any_io_executor ex, core::effect_sink& sink,
                                                  const core::table_config& config, etcd_store_options options,
                                                  std::function<void()> turn_done);

// "etcd://h1:2379,h2:2379" -> {"h1:2379", "h2:2379"} (https:// endpoints when `tls`). Empty when
// the URL is not an etcd:// list; `why` says what is wrong.
std::vector<std::string> parse_store_url(std::string_view url, bool tls, std::string* why);

}  // namespace lmx::detail
