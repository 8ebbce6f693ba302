#ifndef CKA_SERVER_WEB_EMBEDDED_FILES_H_
#define CKA_SERVER_WEB_EMBEDDED_FILES_H_

#include <cstddef>
#include <string_view>

namespace cka::server::web_internal {

// A built file of the page: its URL path ("/main.js") and its bytes.
struct EmbeddedFile {
  std::string_view path;
  const unsigned char* data;
  std::size_t size;
};

// Defined by the source that server/web/embed_web_assets.cmake generates in the
// build tree: every file of the page, kEmbeddedFileCount of them.
extern const EmbeddedFile kEmbeddedFiles[];
extern const std::size_t kEmbeddedFileCount;

}  // namespace cka::server::web_internal

#endif  // CKA_SERVER_WEB_EMBEDDED_FILES_H_
