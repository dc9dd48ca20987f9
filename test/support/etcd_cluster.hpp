#pragma once

// Real etcd members for a test: `etcd` processes on free loopback ports, their data on tmpfs
// (/dev/shm when it exists, so that fsync on a shared disk does not set the pace), stopped by PID
// and removed when the test is done. $LMX_ETCD names another etcd binary than /usr/bin/etcd.

#include "process.hpp"

#include <chrono>
#include <memory>
#include <optional>
#include <string>
#include <vector>

namespace lmx::test {

// PEM files: members serve clients over https:// with cert and key, and ask each client for a
// certificate of ca.
struct etcd_tls {
    std::string ca;
    std::string cert;
    std::string key;
};

class etcd_cluster {
public:
    // Started and answering when the constructor returns.
    explicit etcd_cluster(int members = 1, std::optional<etcd_tls> tls = std::nullopt);
    ~etcd_cluster();
    etcd_cluster(const etcd_cluster&) = delete;
    etcd_cluster& operator=(const etcd_cluster&) = delete;

    int size() const noexcept { return static_cast<int>(members_.size()); }
    std::vector<std::string> endpoints() const;  // "127.0.0.1:port" ("https://..." with TLS) of every member
    std::string endpoint(int i) const;

    void kill(int i);     // SIGKILL, waited for
    void pause(int i);    // SIGSTOP: connections are accepted and nothing is answered
    void resume(int i);   // SIGCONT
    void restart(int i);  // starts a killed member again on its data and ports; waits until it answers
    bool running(int i) const;
    std::string log(int i) const;

private:
    struct member {
        std::string name;
        unsigned client_port = 0;
        unsigned peer_port = 0;
        int pid = -1;
    };
    void start(member& m, bool fresh);
    void wait_ready(const member& m) const;

    std::unique_ptr<temp_dir> dir_;
    std::string token_;
    std::optional<etcd_tls> tls_;
    std::vector<member> members_;
};

}  // namespace lmx::test
