#include "test_pki.hpp"

#include <cstdlib>
#include <fstream>
#include <sstream>
#include <stdexcept>

namespace lmx::test {

test_pki::test_pki() {
    // The configuration the shell TLS tests use too.
    std::ifstream cnf(LMX_TEST_SUPPORT_DIR "/openssl.cnf");
    std::stringstream text;
    text << cnf.rdbuf();
    if (!cnf || text.str().empty()) throw std::runtime_error("cannot read " LMX_TEST_SUPPORT_DIR "/openssl.cnf");
    write("openssl.cnf", text.str());
    write("index.txt", "");
    write("serial", "1000\n");
    make_ca("ca");
    make_ca("other_ca");
    make_leaf("server", "ca", "DNS:localhost,IP:127.0.0.1");
    make_leaf("wrong_host", "ca", "DNS:other.example,IP:10.9.8.7");
    make_leaf("foreign", "other_ca", "DNS:localhost,IP:127.0.0.1");
    make_leaf("client", "ca", "DNS:client.example");
    make_leaf("foreign_client", "other_ca", "DNS:client.example");
    // Self-signed: its own issuer, in no trust store.
    run("openssl req -x509 -config openssl.cnf -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout "
        "self_signed.key -out self_signed.pem -days 2 -subj /CN=localhost -addext "
        "subjectAltName=DNS:localhost,IP:127.0.0.1");
    // openssl 3.0's x509 cannot set dates in the past; its ca command can.
    make_dated("expired", "20200101000000Z", "20200102000000Z");
    make_dated("not_yet_valid", "20900101000000Z", "20900102000000Z");
}

void test_pki::write(const std::string& name, const std::string& text) const { std::ofstream(file(name)) << text; }

void test_pki::run(const std::string& command) const {
    const std::string line = "cd " + dir_.path() + " && " + command + " >>openssl.log 2>&1";
    if (std::system(line.c_str()) != 0) {
        std::stringstream log;
        log << std::ifstream(file("openssl.log")).rdbuf();
        throw std::runtime_error("`" + command + "` failed:\n" + log.str());
    }
}

void test_pki::make_ca(const std::string& name) const {
    run("openssl req -x509 -config openssl.cnf -extensions v3_ca -newkey ec -pkeyopt ec_paramgen_curve:P-256 "
        "-nodes -keyout " +
        name + ".key -out " + name + ".pem -days 2 -subj '/CN=lmx test " + name + "'");
}

void test_pki::write_extensions(const std::string& name, const std::string& alt_names) const {
    write(name + ".ext",
          "basicConstraints = CA:FALSE\nkeyUsage = critical,digitalSignature\n"
          "extendedKeyUsage = serverAuth,clientAuth\nsubjectAltName = " +
              alt_names + "\n");
}

void test_pki::make_request(const std::string& name) const {
    run("openssl req -new -config openssl.cnf -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout " + name +
        ".key -out " + name + ".csr -subj /CN=" + name);
}

void test_pki::make_leaf(const std::string& name, const std::string& ca, const std::string& alt_names) const {
    write_extensions(name, alt_names);
    make_request(name);
    run("openssl x509 -req -in " + name + ".csr -CA " + ca + ".pem -CAkey " + ca + ".key -CAcreateserial -days 2 " +
        "-extfile " + name + ".ext -out " + name + ".pem");
}

void test_pki::make_dated(const std::string& name, const std::string& start, const std::string& end) const {
    write_extensions(name, "DNS:localhost,IP:127.0.0.1");
    make_request(name);
    run("openssl ca -config openssl.cnf -batch -notext -cert ca.pem -keyfile ca.key -in " + name + ".csr -out " + name +
        ".pem -startdate " + start + " -enddate " + end + " -extfile " + name + ".ext");
}

}  // namespace lmx::test
