// The chat page's files (src/serve/web/), embedded in the binary at build time by web/embed.cmake, so the
// server needs no files and no build step at run time.
#pragma once
#include <string_view>

namespace iris::serve {

struct WebAsset {
  std::string_view path;  // URL path: "/", "/app.js", "/style.css"
  std::string_view content_type;
  std::string_view body;
};

// nullptr when no asset has this path.
const WebAsset* find_web_asset(std::string_view path);

}  // namespace iris::serve
