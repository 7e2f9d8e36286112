// safetensors: memory-mapped, zero-copy reading of single files and Hugging Face checkpoint folders (single
// or sharded), with the header validated as strictly as Hugging Face's own reader; atomic writing.
// Format: u64 little-endian header length N; N bytes of JSON
//   {name: {"dtype", "shape", "data_offsets": [begin, end]}, "__metadata__": {str: str}};
// then the data section, which the tensors' [begin, end) ranges tile exactly.
#pragma once
#include <cstddef>
#include <map>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "io/file.h"
#include "tensor/tensor.h"

namespace iris::io {

struct TensorInfo {
  std::string name;
  DType dtype = DType::F32;
  Shape shape;
  size_t offset = 0;  // absolute byte offset of the data in the file
  size_t nbytes = 0;
  std::string file;  // the file holding it
};

// Headers larger than this are rejected before parsing (the same limit as Hugging Face's reader).
constexpr size_t kMaxSafetensorsHeader = 100'000'000;

class SafetensorsFile {
 public:
  // Maps and validates the file; every error names the file, and the tensor and the problem where there
  // is one.
  static std::shared_ptr<SafetensorsFile> open(const std::string& path);

  const std::map<std::string, TensorInfo>& tensors() const { return tensors_; }
  const std::map<std::string, std::string>& metadata() const { return metadata_; }  // "__metadata__"
  const std::string& path() const { return file_->path(); }
  bool has(const std::string& name) const { return tensors_.count(name) != 0; }
  const TensorInfo& info(const std::string& name) const;

  // A view into the mapping (zero copy) that keeps the mapping alive. Data whose offset is not a multiple of
  // the element size (possible only from non-HF writers) is copied instead, so kernels never see misaligned
  // pointers.
  Tensor get(const std::string& name) const;
  Tensor get(const TensorInfo& info) const;

 private:
  std::shared_ptr<MappedFile> file_;
  std::map<std::string, TensorInfo> tensors_;
  std::map<std::string, std::string> metadata_;
};

// A Hugging Face checkpoint: a folder with model.safetensors, or the shards listed in
// model.safetensors.index.json (weight_map), or (fallback) every *.safetensors in the folder; or a path to
// one .safetensors file. The same preference order as transformers' from_pretrained. Cheap to copy (shares
// the mapped files).
class Checkpoint {
 public:
  static Checkpoint open(const std::string& path_or_dir);

  bool has(const std::string& name) const { return entries_.count(name) != 0; }
  Tensor get(const std::string& name) const;  // throws naming the tensor and the checkpoint when missing
  std::vector<std::string> names() const;     // sorted
  const TensorInfo& info(const std::string& name) const;
  size_t size() const { return entries_.size(); }
  const std::string& path() const { return path_; }
  const std::vector<std::shared_ptr<SafetensorsFile>>& files() const { return files_; }

 private:
  struct Entry {
    const SafetensorsFile* file;
    const TensorInfo* info;
  };
  const Entry& entry(const std::string& name) const;

  std::string path_;
  std::vector<std::shared_ptr<SafetensorsFile>> files_;  // own the files that entries point into
  std::map<std::string, Entry> entries_;
};

using NamedTensors = std::vector<std::pair<std::string, Tensor>>;

// Writes tensors (any dtype; non-contiguous ones are made contiguous one at a time) in sorted-name order, the
// header padded with spaces to a multiple of 8 and "__metadata__" from `metadata` (omitted when empty),
// atomically. Duplicate names are an error. Tensors borrowed from the file being replaced are safe to pass:
// the old file stays mapped until they are released.
void save_safetensors(const std::string& path, const NamedTensors& tensors,
                      const std::map<std::string, std::string>& metadata = {{"format", "pt"}});

// The bytes save_safetensors would write (for tests and small in-memory uses).
std::string safetensors_bytes(const NamedTensors& tensors,
                              const std::map<std::string, std::string>& metadata = {{"format", "pt"}});

// Writes a checkpoint folder (created if missing) the way transformers' save_pretrained does: one
// model.safetensors when the tensor bytes fit in max_shard_bytes, otherwise model-0000i-of-0000n.safetensors
// shards (sorted-name order, greedily filled; a tensor larger than the limit gets a shard of its own) plus
// model.safetensors.index.json
// ({"metadata": {"total_size"}, "weight_map"}). Stale files of the other layout (model.safetensors, the
// index, model-*-of-*.safetensors not part of this save) are removed after the new files are in place, so
// that Checkpoint::open cannot pick up old weights.
void save_safetensors_sharded(const std::string& dir, const NamedTensors& tensors, size_t max_shard_bytes);

}  // namespace iris::io
