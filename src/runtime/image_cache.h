// LRU cache of image embeddings keyed by the image's content hash, bounded in bytes, so a repeated image is not
// encoded again. Thread-safe.
#pragma once
#include <list>
#include <mutex>
#include <optional>
#include <string>
#include <unordered_map>

#include "models/parts.h"

namespace iris::runtime {

class ImageCache {
 public:
  explicit ImageCache(size_t max_bytes) : max_bytes_(max_bytes) {}
  std::optional<models::ImageFeatures> get(const std::string& key);
  void put(const std::string& key, const models::ImageFeatures& features);
  size_t bytes() const;
  size_t size() const;

 private:
  size_t max_bytes_, bytes_ = 0;
  mutable std::mutex mu_;
  std::list<std::pair<std::string, models::ImageFeatures>> lru_;  // front: most recent
  std::unordered_map<std::string, std::list<std::pair<std::string, models::ImageFeatures>>::iterator> index_;
};

// Hex SHA-256 of bytes (cache keys for image content).
std::string sha256_hex(const void* data, size_t n);

}  // namespace iris::runtime
