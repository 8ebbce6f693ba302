// cka::server::FindWebAsset: the page esbuild built is embedded byte for byte,
// "/" is its index, every file the index links is served with its content type,
// and nothing else is.
#include "server/web/web_assets.h"

#include <gtest/gtest.h>

#include <fstream>
#include <iterator>
#include <map>
#include <regex>
#include <string>
#include <vector>

namespace cka::server {
namespace {

std::string ReadBuiltFile(const std::string& name) {
  std::ifstream in(std::string(CKA_WEB_DIST_DIR) + "/" + name,
                   std::ios::binary);
  EXPECT_TRUE(in) << "the build wrote no " << name << " in "
                  << CKA_WEB_DIST_DIR;
  return std::string(std::istreambuf_iterator<char>(in), {});
}

TEST(WebAssetsTest, RootIsTheIndexPage) {
  const auto root = FindWebAsset("/");
  const auto index = FindWebAsset("/index.html");
  ASSERT_TRUE(root.has_value());
  ASSERT_TRUE(index.has_value());
  EXPECT_EQ(root->body, index->body);
  EXPECT_EQ(root->content_type, "text/html; charset=utf-8");
  EXPECT_NE(root->body.find("<!doctype html>"), std::string_view::npos);
}

TEST(WebAssetsTest, EmbeddedFilesEqualTheBuiltFilesByteForByte) {
  for (const std::string name :
       {"index.html", "main.js", "main.css", "favicon.svg"}) {
    const auto asset = FindWebAsset("/" + name);
    ASSERT_TRUE(asset.has_value()) << name;
    EXPECT_EQ(asset->body, ReadBuiltFile(name)) << name;
  }
}

TEST(WebAssetsTest, EveryFileTheIndexLinksIsServedWithItsContentType) {
  const auto index = FindWebAsset("/");
  ASSERT_TRUE(index.has_value());
  const std::string html(index->body);
  const std::regex link(R"((?:src|href)="([^"]+)\")");
  std::vector<std::string> linked;
  for (auto it = std::sregex_iterator(html.begin(), html.end(), link);
       it != std::sregex_iterator(); ++it) {
    linked.push_back((*it)[1]);
  }
  ASSERT_FALSE(linked.empty()) << "index.html links no script or style";
  for (const std::string& name : linked) {
    const auto asset = FindWebAsset("/" + name);
    ASSERT_TRUE(asset.has_value()) << "index.html links " << name;
    EXPECT_FALSE(asset->body.empty()) << name;
    const std::string extension = name.substr(name.rfind('.'));
    const std::map<std::string, std::string> types = {
        {".js", "text/javascript; charset=utf-8"},
        {".css", "text/css; charset=utf-8"},
        {".svg", "image/svg+xml"}};
    ASSERT_EQ(types.count(extension), 1u)
        << "a file type the test lacks: " << name;
    EXPECT_EQ(asset->content_type, types.at(extension)) << name;
  }
}

TEST(WebAssetsTest, PathsThePageDoesNotHaveAreNotFound) {
  for (const char* path :
       {"", "index.html", "/index.htm", "/main.js/", "/../main.js", "//main.js",
        "/main.js?x=1", "/api/v1/sessions", "/INDEX.HTML", "/dist/main.js"}) {
    EXPECT_FALSE(FindWebAsset(path).has_value()) << path;
  }
}

}  // namespace
}  // namespace cka::server
