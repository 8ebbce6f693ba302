#ifndef CKA_SERVER_WEB_WEB_ASSETS_H_
#define CKA_SERVER_WEB_WEB_ASSETS_H_

#include <optional>
#include <string_view>

namespace cka::server {

// One file of ckad's page, embedded in the binary at build time (server/web:
// the ES-module sources bundled by esbuild). Both views point into static
// storage: valid for the life of the process, never freed.
struct WebAsset {
  std::string_view body;
  std::string_view content_type;  // e.g. "text/javascript; charset=utf-8"
};

// The Content-Security-Policy to send with every file of the page: the page
// runs its own scripts only and talks to its own origin only; ECharts sets
// style attributes, and the PNG export is a data: URL. (tests/web's browser
// test runs the page under it.)
inline constexpr std::string_view kWebAssetSecurityPolicy =
    "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; "
    "img-src 'self' data: blob:; connect-src 'self'; object-src 'none'; "
    "base-uri 'none'; frame-ancestors 'none'";

// Returns the embedded file served at `url_path` (the request's path, without
// its query string): "/" is "/index.html"; nullopt for any path the page does
// not have. Thread-safe: reads constant data only.
std::optional<WebAsset> FindWebAsset(std::string_view url_path);

}  // namespace cka::server

#endif  // CKA_SERVER_WEB_WEB_ASSETS_H_
