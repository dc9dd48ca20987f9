#pragma once

#include <span>
#include <string_view>

namespace lmx::detail {

// A file the broker serves over HTTP, embedded at build time (libs/broker/web).
struct web_asset {
    std::string_view path;  // URL path, e.g. "/lmx.js"
    std::string_view content_type;
    std::string_view body;
};

// Every embedded file; defined in the generated web_assets.cpp.
std::span<const web_asset> web_assets() noexcept;

}  // namespace lmx::detail
