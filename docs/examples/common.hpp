#pragma once

// Where the examples find their broker: the first argument, else LMX_URL / LMX_UDS_PATH /
// LMX_HOST + LMX_PORT, else the settings file `lmx set` writes, else tcp://127.0.0.1:6970.

#include <lmx/client/client.hpp>

inline lmx::client_options example_options(int argc, char** argv) {
    auto options = lmx::client_options::from_env();
    if (argc > 1) options.url = argv[1];
    return options;
}
