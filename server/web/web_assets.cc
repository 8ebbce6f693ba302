#include "server/web/web_assets.h"

#include <array>
#include <utility>

#include "server/web/embedded_files.h"

namespace cka::server {
namespace {

constexpr std::array<std::pair<std::string_view, std::string_view>, 6>
    kContentTypes = {{
        {".html", "text/html; charset=utf-8"},
        {".js", "text/javascript; charset=utf-8"},
        {".css", "text/css; charset=utf-8"},
        {".svg", "image/svg+xml"},
        {".png", "image/png"},
        {".ico", "image/x-icon"},
    }};

std::string_view ContentTypeOf(std::string_view path) {
  for (const auto& [extension, type] : kContentTypes) {
    if (path.size() >= extension.size() &&
        path.substr(path.size() - extension.size()) == extension) {
      return type;
    }
  }
  return "application/octet-stream";
}

}  // namespace

std::optional<WebAsset> FindWebAsset(std::string_view url_path) {
  if (url_path == "/") url_path = "/index.html";
  for (std::size_t i = 0; i < web_internal::kEmbeddedFileCount; ++i) {
    const web_internal::EmbeddedFile& file = web_internal::kEmbeddedFiles[i];
    if (file.path == url_path) {
      return WebAsset{
          std::string_view(reinterpret_cast<const char*>(file.data), file.size),
          ContentTypeOf(file.path)};
    }
  }
  return std::nullopt;
}

}  // namespace cka::server
