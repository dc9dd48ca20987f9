#pragma once

// A throwaway PKI made with the openssl command line: two CAs and certificates for every case the
// TLS tests need, as <name>.pem and <name>.key in a temp dir that goes with the object.
//   ca, other_ca                      certificate authorities
//   server                            by ca, for localhost and 127.0.0.1
//   wrong_host                        by ca, for other.example and 10.9.8.7
//   foreign                           by other_ca, for localhost and 127.0.0.1
//   client, foreign_client            client certificates by ca and by other_ca
//   self_signed                       its own issuer, for localhost and 127.0.0.1
//   expired, not_yet_valid            by ca, valid in 2020 and in 2090

#include "process.hpp"

#include <string>

namespace lmx::test {

class test_pki {
public:
    test_pki();  // throws std::runtime_error with openssl's output when a step fails

    std::string cert(const std::string& name) const { return dir_.path() + "/" + name + ".pem"; }
    std::string key(const std::string& name) const { return dir_.path() + "/" + name + ".key"; }
    std::string file(const std::string& name) const { return dir_.path() + "/" + name; }
    void write(const std::string& name, const std::string& text) const;

private:
    temp_dir dir_;  // first: removed even when the constructor fails half-way

    void run(const std::string& command) const;
    void make_ca(const std::string& name) const;
    void write_extensions(const std::string& name, const std::string& alt_names) const;
    void make_request(const std::string& name) const;
    void make_leaf(const std::string& name, const std::string& ca, const std::string& alt_names) const;
    void make_dated(const std::string& name, const std::string& start, const std::string& end) const;
};

}  // namespace lmx::test
