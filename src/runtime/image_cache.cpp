// LRU image-embedding cache and SHA-256 (OpenSSL) content keys.
#include "runtime/image_cache.h"

#include <openssl/evp.h>

#include "tensor/error.h"

namespace iris::runtime {

std::optional<models::ImageFeatures> ImageCache::get(const std::string& key) {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = index_.find(key);
  if (it == index_.end()) return std::nullopt;
  lru_.splice(lru_.begin(), lru_, it->second);  // now the most recent
  return it->second->second;
}

void ImageCache::put(const std::string& key, const models::ImageFeatures& features) {
  const size_t n = features.embeddings.nbytes();
  std::lock_guard<std::mutex> lock(mu_);
  if (n > max_bytes_ || key.empty()) return;  // would evict everything for one entry
  auto it = index_.find(key);
  if (it != index_.end()) {
    bytes_ -= it->second->second.embeddings.nbytes();
    lru_.erase(it->second);
    index_.erase(it);
  }
  while (bytes_ + n > max_bytes_ && !lru_.empty()) {
    bytes_ -= lru_.back().second.embeddings.nbytes();
    index_.erase(lru_.back().first);
    lru_.pop_back();
  }
  lru_.emplace_front(key, features);
  index_[key] = lru_.begin();
  bytes_ += n;
}

size_t ImageCache::bytes() const {
  std::lock_guard<std::mutex> lock(mu_);
  return bytes_;
}

size_t ImageCache::size() const {
  std::lock_guard<std::mutex> lock(mu_);
  return lru_.size();
}

std::string sha256_hex(const void* data, size_t n) {
  unsigned char md[EVP_MAX_MD_SIZE];
  unsigned int len = 0;
  IRIS_CHECK(EVP_Digest(data, n, md, &len, EVP_sha256(), nullptr) == 1, "SHA-256 failed");
  static const char* hex = "0123456789abcdef";
  std::string s;
  for (unsigned i = 0; i < len; ++i) {
    s += hex[md[i] >> 4];
    s += hex[md[i] & 15];
  }
  return s;
}

}  // namespace iris::runtime
