// safetensors reading (mmap, zero copy, strict header validation), Hugging Face checkpoint folders, and
// writing.
#include "io/safetensors.h"

#include <algorithm>
#include <bit>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <set>

namespace fs = std::filesystem;

namespace iris::io {

static_assert(std::endian::native == std::endian::little,
              "safetensors data is little-endian; big-endian hosts unsupported");

namespace {

constexpr size_t kMaxDims =
    256;  // far above any real tensor; bounds what a hostile header can make us allocate

// Parses the JSON header with SAX events straight into TensorInfo entries: the structure is checked as it
// streams by, so a hostile header fails at its first wrong token and never builds a large JSON tree in
// memory.
class HeaderParser {
 public:
  HeaderParser(const std::string& file, size_t data_start, size_t data_size)
      : file_(file), data_start_(data_start), data_size_(data_size) {}

  std::map<std::string, TensorInfo> tensors;
  std::map<std::string, std::string> metadata;

  // ---- SAX interface (nlohmann::json_sax) ----
  bool null() { return scalar("null"); }
  bool boolean(bool) { return scalar("a boolean"); }
  bool number_float(double, const std::string&) { return number(false, 0, true); }
  bool number_integer(int64_t v) {
    return v < 0 ? number(true, 0, false) : number(false, uint64_t(v), false);
  }
  bool number_unsigned(uint64_t v) { return number(false, v, false); }
  bool binary(nlohmann::json::binary_t&) { return scalar("binary data"); }

  bool string(std::string& s) {
    switch (state_) {
      case State::kDtype:
        cur_dtype_ = std::move(s);
        state_ = State::kEntryKey;
        return true;
      case State::kMetaValue:
        metadata[meta_key_] = std::move(s);
        state_ = State::kMetaKey;
        return true;
      default:
        return scalar("a string");
    }
  }

  bool start_object(size_t) {
    switch (state_) {
      case State::kTop:
        state_ = State::kTopKey;
        return true;
      case State::kMetaStart:
        state_ = State::kMetaKey;
        return true;
      case State::kEntryStart:
        state_ = State::kEntryKey;
        return true;
      case State::kSkip:
        ++skip_depth_;
        return true;
      default:
        return unexpected("an object");
    }
  }

  bool key(std::string& k) {
    switch (state_) {
      case State::kTopKey:
        if (k == "__metadata__") {
          if (seen_metadata_) fail_header("duplicate \"__metadata__\"");
          seen_metadata_ = true;
          state_ = State::kMetaStart;
        } else {
          if (tensors.count(k)) fail_header("duplicate tensor name '", k, "'");
          name_ = std::move(k);
          cur_dtype_.clear();
          cur_shape_.clear();
          offsets_.clear();
          has_dtype_ = has_shape_ = has_offsets_ = false;
          state_ = State::kEntryStart;
        }
        return true;
      case State::kMetaKey:
        if (metadata.count(k)) fail_header("duplicate \"__metadata__\" key '", k, "'");
        meta_key_ = std::move(k);
        state_ = State::kMetaValue;
        return true;
      case State::kEntryKey:
        if (k == "dtype") {
          if (has_dtype_) fail_tensor("duplicate field 'dtype'");
          has_dtype_ = true;
          state_ = State::kDtype;
        } else if (k == "shape") {
          if (has_shape_) fail_tensor("duplicate field 'shape'");
          has_shape_ = true;
          state_ = State::kShapeStart;
        } else if (k == "data_offsets") {
          if (has_offsets_) fail_tensor("duplicate field 'data_offsets'");
          has_offsets_ = true;
          state_ = State::kOffsetsStart;
        } else {  // unknown fields are ignored, as Hugging Face's reader does
          state_ = State::kSkip;
          skip_depth_ = 0;
        }
        return true;
      case State::kSkip:
        return true;
      default:
        return unexpected("a key");
    }
  }

  bool end_object() {
    switch (state_) {
      case State::kTopKey:
        state_ = State::kDone;
        return true;
      case State::kMetaKey:
        state_ = State::kTopKey;
        return true;
      case State::kEntryKey:
        finish_entry();
        state_ = State::kTopKey;
        return true;
      case State::kSkip:
        end_skipped();
        return true;
      default:
        return unexpected("the end of an object");
    }
  }

  bool start_array(size_t) {
    switch (state_) {
      case State::kShapeStart:
        state_ = State::kShapeElem;
        return true;
      case State::kOffsetsStart:
        state_ = State::kOffsetsElem;
        return true;
      case State::kSkip:
        ++skip_depth_;
        return true;
      default:
        return unexpected("an array");
    }
  }

  bool end_array() {
    switch (state_) {
      case State::kShapeElem:
        state_ = State::kEntryKey;
        return true;
      case State::kOffsetsElem:
        if (offsets_.size() != 2)
          fail_tensor("'data_offsets' must be [begin, end], got ", offsets_.size(), " values");
        state_ = State::kEntryKey;
        return true;
      case State::kSkip:
        end_skipped();
        return true;
      default:
        return unexpected("the end of an array");
    }
  }

  bool parse_error(size_t, const std::string&, const nlohmann::json::exception& e) {
    std::string msg = e.what();
    if (size_t p = msg.find("] "); msg.rfind("[json.exception", 0) == 0 && p != std::string::npos)
      msg.erase(0, p + 2);
    fail_header("not valid JSON: ", msg);
  }

  // Everything after the tensors are known: the byte ranges must tile the data section exactly (no overlaps,
  // gaps or trailing bytes), as Hugging Face's reader requires. A zero-size tensor may sit anywhere on a
  // boundary.
  void check_tiling() const {
    if (state_ != State::kDone) fail_header("truncated JSON");
    std::vector<std::pair<std::pair<uint64_t, uint64_t>, const std::string*>>
        order;  // [begin, end) in the data
    order.reserve(tensors.size());
    for (const auto& [name, info] : tensors) {
      uint64_t begin = info.offset - data_start_;
      order.push_back({{begin, begin + info.nbytes}, &name});
    }
    std::sort(order.begin(), order.end());
    uint64_t cursor = 0;
    const std::string* prev = nullptr;
    for (const auto& [r, name] : order) {
      if (r.first < cursor)
        fail(str_cat("tensor '", *name, "': data_offsets [", r.first, ", ", r.second, "] overlap tensor '",
                     *prev, "' (which ends at ", cursor, ")"));
      if (r.first > cursor)
        fail(str_cat("tensor '", *name, "': data_offsets [", r.first, ", ", r.second, "] leave a gap of ",
                     r.first - cursor, " bytes after ", prev ? "tensor '" + *prev + "'" : "the header",
                     " (at ", cursor, ")"));
      cursor = r.second;
      prev = name;
    }
    if (cursor != data_size_)
      fail(str_cat("data section holds ", data_size_, " bytes but the tensors cover ", cursor, " (",
                   data_size_ - cursor, " trailing bytes not part of any tensor)"));
  }

 private:
  enum class State {
    kTop,
    kTopKey,
    kMetaStart,
    kMetaKey,
    kMetaValue,
    kEntryStart,
    kEntryKey,
    kDtype,
    kShapeStart,
    kShapeElem,
    kOffsetsStart,
    kOffsetsElem,
    kSkip,
    kDone
  };

  template <typename... A>
  [[noreturn]] void fail_header(const A&... a) const {
    throw Error(str_cat(file_, ": invalid safetensors header: ", a...));
  }
  template <typename... A>
  [[noreturn]] void fail_tensor(const A&... a) const {
    throw Error(str_cat(file_, ": invalid safetensors header: tensor '", name_, "': ", a...));
  }
  [[noreturn]] void fail(const std::string& msg) const {
    throw Error(str_cat(file_, ": invalid safetensors file: ", msg));
  }

  // A scalar value (not a number): accepted only as (part of) an ignored field.
  bool scalar(const char* what) {
    if (state_ == State::kSkip) {
      if (skip_depth_ == 0) state_ = State::kEntryKey;
      return true;
    }
    return unexpected(what);
  }

  bool number(bool negative, uint64_t v, bool is_float) {
    if (state_ == State::kShapeElem || state_ == State::kOffsetsElem) {
      const char* field = state_ == State::kShapeElem ? "shape" : "data_offsets";
      if (is_float) fail_tensor("'", field, "' holds a non-integer value");
      if (negative) fail_tensor("'", field, "' holds a negative value");
      if (state_ == State::kShapeElem) {
        if (v > uint64_t(INT64_MAX)) fail_tensor("dimension ", v, " is too large");
        if (cur_shape_.size() >= kMaxDims) fail_tensor("shape has more than ", kMaxDims, " dimensions");
        cur_shape_.push_back(int64_t(v));
      } else {
        if (offsets_.size() >= 2) fail_tensor("'data_offsets' must be [begin, end], got more than 2 values");
        offsets_.push_back(v);
      }
      return true;
    }
    return scalar("a number");
  }

  void end_skipped() {
    if (skip_depth_ == 0) unexpected("a closing bracket");  // cannot happen with well-formed JSON
    if (--skip_depth_ == 0) state_ = State::kEntryKey;
  }

  bool unexpected(const char* what) const {
    switch (state_) {
      case State::kTop:
        fail_header("not a JSON object");
      case State::kMetaStart:
        fail_header("\"__metadata__\" is not an object");
      case State::kMetaValue:
        fail_header("\"__metadata__\" value for '", meta_key_, "' is ", what, ", not a string");
      case State::kEntryStart:
        fail_tensor("entry is ", what, ", not an object");
      case State::kDtype:
        fail_tensor("'dtype' is ", what, ", not a string");
      case State::kShapeStart:
        fail_tensor("'shape' is ", what, ", not an array");
      case State::kShapeElem:
        fail_tensor("'shape' holds ", what, ", not a dimension");
      case State::kOffsetsStart:
        fail_tensor("'data_offsets' is ", what, ", not an array");
      case State::kOffsetsElem:
        fail_tensor("'data_offsets' holds ", what, ", not an offset");
      default:
        fail_header("unexpected ", what);
    }
  }

  void finish_entry() {
    if (!has_dtype_) fail_tensor("missing 'dtype'");
    if (!has_shape_) fail_tensor("missing 'shape'");
    if (!has_offsets_) fail_tensor("missing 'data_offsets'");
    std::optional<DType> dt = dtype_from_name(cur_dtype_);
    if (!dt) fail_tensor("unknown or unsupported dtype '", cur_dtype_, "'");
    // numel * element size must fit in int64 (what Tensor counts in) without overflowing.
    int64_t nbytes = int64_t(dtype_size(*dt));
    for (int64_t d : cur_shape_)
      if (__builtin_mul_overflow(nbytes, d, &nbytes))
        fail_tensor("shape ", shape_str(cur_shape_), " overflows the size of a tensor");
    uint64_t begin = offsets_[0], end = offsets_[1];
    if (begin > end) fail_tensor("data_offsets [", begin, ", ", end, "]: begin is after end");
    if (end > data_size_)
      fail_tensor("data_offsets [", begin, ", ", end, "] reach beyond the data section (", data_size_,
                  " bytes; file truncated?)");
    if (end - begin != uint64_t(nbytes))
      fail_tensor("data_offsets [", begin, ", ", end, "] span ", end - begin, " bytes but ", cur_dtype_, " ",
                  shape_str(cur_shape_), " needs ", nbytes);
    TensorInfo info;
    info.name = name_;
    info.dtype = *dt;
    info.shape = std::move(cur_shape_);
    info.offset = data_start_ + size_t(begin);
    info.nbytes = size_t(nbytes);
    info.file = file_;
    tensors.emplace(name_, std::move(info));
    cur_shape_.clear();
  }

  const std::string& file_;
  size_t data_start_, data_size_;
  State state_ = State::kTop;
  int skip_depth_ = 0;
  bool seen_metadata_ = false;
  std::string name_, meta_key_, cur_dtype_;
  Shape cur_shape_;
  std::vector<uint64_t> offsets_;
  bool has_dtype_ = false, has_shape_ = false, has_offsets_ = false;
};

}  // namespace

// ---- SafetensorsFile ----

std::shared_ptr<SafetensorsFile> SafetensorsFile::open(const std::string& path) {
  auto f = std::shared_ptr<SafetensorsFile>(new SafetensorsFile());
  f->file_ = MappedFile::open(path);
  const size_t size = f->file_->size();
  IRIS_CHECK(size >= 8, path, ": not a safetensors file: ", size,
             " bytes, too short for the 8-byte header length");
  uint64_t n;
  std::memcpy(&n, f->file_->data(), 8);
  IRIS_CHECK(n <= kMaxSafetensorsHeader, path, ": invalid safetensors header length ", n, " (over the ",
             kMaxSafetensorsHeader, "-byte limit; not a safetensors file?)");
  IRIS_CHECK(n <= size - 8, path, ": invalid safetensors header length ", n, ": larger than the file (", size,
             " bytes; truncated?)");
  const char* h = reinterpret_cast<const char*>(f->file_->data()) + 8;
  HeaderParser parser(path, 8 + size_t(n), size - 8 - size_t(n));
  nlohmann::json::sax_parse(h, h + n, &parser);  // errors throw from inside the parser
  parser.check_tiling();
  f->tensors_ = std::move(parser.tensors);
  f->metadata_ = std::move(parser.metadata);
  return f;
}

const TensorInfo& SafetensorsFile::info(const std::string& name) const {
  auto it = tensors_.find(name);
  IRIS_CHECK(it != tensors_.end(), "tensor '", name, "' not found in ", path());
  return it->second;
}

Tensor SafetensorsFile::get(const std::string& name) const {
  return get(info(name));
}

Tensor SafetensorsFile::get(const TensorInfo& info) const {
  uint8_t* p = file_->mutable_data() + info.offset;
  if (info.offset % dtype_size(info.dtype) != 0) {
    Tensor t = Tensor::empty(info.shape, info.dtype);
    std::memcpy(t.raw(), p, info.nbytes);
    return t;
  }
  // The aliasing shared_ptr keeps the whole mapping alive for as long as any tensor borrows from it.
  auto storage = Storage::borrow(p, info.nbytes, std::shared_ptr<void>(file_, file_.get()));
  return Tensor::from_storage(std::move(storage), 0, info.shape, info.dtype);
}

// ---- Checkpoint ----

namespace {

// A shard name from an index must stay inside the checkpoint folder.
bool is_safe_relative(const std::string& s) {
  if (s.empty()) return false;
  fs::path p(s);
  if (p.is_absolute()) return false;
  for (const auto& part : p)
    if (part == "..") return false;
  return true;
}

}  // namespace

Checkpoint Checkpoint::open(const std::string& path_or_dir) {
  Checkpoint ck;
  ck.path_ = path_or_dir;
  std::error_code ec;
  fs::path dir(path_or_dir);

  auto add_file = [&](const std::string& file, const std::vector<std::string>* only) {
    auto sf = SafetensorsFile::open(file);
    if (only) {
      for (const std::string& name : *only) {
        const auto& ts = sf->tensors();
        auto it = ts.find(name);
        IRIS_CHECK(it != ts.end(), path_or_dir, ": tensor '", name,
                   "' is listed in model.safetensors.index.json for ", file,
                   " but that file does not hold it");
        ck.entries_[name] = Entry{sf.get(), &it->second};
      }
    } else {
      for (const auto& [name, info] : sf->tensors()) {
        auto [it, fresh] = ck.entries_.emplace(name, Entry{sf.get(), &info});
        IRIS_CHECK(fresh, path_or_dir, ": tensor '", name, "' appears in both ", it->second.info->file,
                   " and ", file);
      }
    }
    ck.files_.push_back(std::move(sf));
  };

  if (fs::is_regular_file(dir, ec)) {
    add_file(path_or_dir, nullptr);
    return ck;
  }
  IRIS_CHECK(fs::is_directory(dir, ec), "checkpoint ", path_or_dir,
             " is neither a .safetensors file nor a folder");

  if (fs::exists(dir / "model.safetensors", ec)) {
    add_file((dir / "model.safetensors").string(), nullptr);
    return ck;
  }

  const std::string index_path = (dir / "model.safetensors.index.json").string();
  if (fs::exists(index_path, ec)) {
    nlohmann::json index = read_json_file(index_path);
    IRIS_CHECK(index.is_object() && index.contains("weight_map") && index["weight_map"].is_object(),
               index_path, ": no \"weight_map\" object");
    std::map<std::string, std::vector<std::string>> by_shard;  // shard file -> tensor names
    for (const auto& [name, shard] : index["weight_map"].items()) {
      IRIS_CHECK(shard.is_string(), index_path, ": weight_map entry for '", name, "' is not a file name");
      const std::string s = shard.get<std::string>();
      IRIS_CHECK(is_safe_relative(s), index_path, ": weight_map entry for '", name, "' names '", s,
                 "', which is not a file inside the checkpoint folder");
      by_shard[s].push_back(name);
    }
    for (const auto& [shard, names] : by_shard) {
      const std::string file = (dir / shard).string();
      try {
        add_file(file, &names);
      } catch (const Error& e) {
        if (fs::exists(file, ec)) throw;
        throw Error(str_cat(index_path, ": shard '", shard, "' (holding '", names.front(), "'",
                            names.size() > 1 ? str_cat(" and ", names.size() - 1, " more") : "",
                            ") is missing: ", e.what()));
      }
    }
    return ck;
  }

  std::vector<std::string> files;
  for (const auto& de : fs::directory_iterator(dir, ec))
    if (de.path().extension() == ".safetensors" && de.is_regular_file(ec))
      files.push_back(de.path().string());
  IRIS_CHECK(!ec, "cannot list checkpoint folder ", path_or_dir, ": ", ec.message());
  IRIS_CHECK(!files.empty(), "checkpoint folder ", path_or_dir,
             " has no model.safetensors, model.safetensors.index.json or other *.safetensors file");
  std::sort(files.begin(), files.end());
  for (const auto& f : files) add_file(f, nullptr);
  return ck;
}

const Checkpoint::Entry& Checkpoint::entry(const std::string& name) const {
  auto it = entries_.find(name);
  IRIS_CHECK(it != entries_.end(), "tensor '", name, "' not found in checkpoint ", path_, " (",
             entries_.size(), " tensors)");
  return it->second;
}

Tensor Checkpoint::get(const std::string& name) const {
  const Entry& e = entry(name);
  return e.file->get(*e.info);
}

const TensorInfo& Checkpoint::info(const std::string& name) const {
  return *entry(name).info;
}

std::vector<std::string> Checkpoint::names() const {
  std::vector<std::string> out;
  out.reserve(entries_.size());
  for (const auto& kv : entries_) out.push_back(kv.first);
  return out;
}

// ---- writing ----

namespace {

struct Planned {
  const std::string* name;
  const Tensor* tensor;
  size_t nbytes;
};

// Sorted by name, checked for duplicates and undefined tensors.
std::vector<Planned> plan(const NamedTensors& tensors, const std::string& dest) {
  std::vector<Planned> p;
  p.reserve(tensors.size());
  for (const auto& [name, t] : tensors) {
    IRIS_CHECK(t.defined(), "saving ", dest, ": tensor '", name, "' is undefined");
    IRIS_CHECK(name != "__metadata__", "saving ", dest, ": '__metadata__' cannot be a tensor name");
    p.push_back({&name, &t, t.nbytes()});
  }
  std::sort(p.begin(), p.end(), [](const Planned& a, const Planned& b) { return *a.name < *b.name; });
  for (size_t i = 1; i < p.size(); ++i)
    IRIS_CHECK(*p[i].name != *p[i - 1].name, "saving ", dest, ": duplicate tensor name '", *p[i].name, "'");
  return p;
}

std::string json_string(const std::string& s, const std::string& dest) {
  try {
    return nlohmann::json(s).dump();
  } catch (const nlohmann::json::exception&) {
    throw Error(str_cat("saving ", dest, ": name '", s, "' is not valid UTF-8"));
  }
}

// The 8-byte length plus the space-padded JSON header.
std::string header_bytes(const std::vector<Planned>& p, const std::map<std::string, std::string>& metadata,
                         const std::string& dest) {
  std::string h = "{";
  if (!metadata.empty()) {
    h += "\"__metadata__\":{";
    bool first = true;
    for (const auto& [k, v] : metadata) {
      if (!first) h += ',';
      first = false;
      h += json_string(k, dest) + ':' + json_string(v, dest);
    }
    h += '}';
  }
  size_t offset = 0;
  for (const Planned& e : p) {
    if (h.size() > 1) h += ',';
    h += json_string(*e.name, dest);
    h += str_cat(":{\"dtype\":\"", dtype_name(e.tensor->dtype()), "\",\"shape\":[");
    const Shape& s = e.tensor->shape();
    for (size_t i = 0; i < s.size(); ++i) {
      if (i) h += ',';
      h += std::to_string(s[i]);
    }
    h += str_cat("],\"data_offsets\":[", offset, ",", offset + e.nbytes, "]}");
    offset += e.nbytes;
  }
  h += '}';
  h.append((8 - h.size() % 8) % 8, ' ');  // keeps the data section 8-byte aligned
  uint64_t n = h.size();
  std::string out(8, '\0');
  std::memcpy(out.data(), &n, 8);
  return out + h;
}

template <typename Sink>
void write_safetensors(Sink&& sink, const std::vector<Planned>& p,
                       const std::map<std::string, std::string>& metadata, const std::string& dest) {
  std::string header = header_bytes(p, metadata, dest);
  sink(header.data(), header.size());
  for (const Planned& e : p) {
    Tensor c = e.tensor->contiguous();  // one tensor at a time: a copy only for non-contiguous views
    sink(c.raw(), e.nbytes);
  }
}

void save_planned(const std::string& path, const std::vector<Planned>& p,
                  const std::map<std::string, std::string>& metadata) {
  AtomicFileWriter w(path);
  write_safetensors([&](const void* d, size_t n) { w.write(d, n); }, p, metadata, path);
  w.commit();
}

}  // namespace

void save_safetensors(const std::string& path, const NamedTensors& tensors,
                      const std::map<std::string, std::string>& metadata) {
  save_planned(path, plan(tensors, path), metadata);
}

std::string safetensors_bytes(const NamedTensors& tensors,
                              const std::map<std::string, std::string>& metadata) {
  std::string out;
  write_safetensors([&](const void* d, size_t n) { out.append(static_cast<const char*>(d), n); },
                    plan(tensors, "safetensors bytes"), metadata, "safetensors bytes");
  return out;
}

void save_safetensors_sharded(const std::string& dir, const NamedTensors& tensors, size_t max_shard_bytes) {
  std::error_code ec;
  fs::create_directories(dir, ec);
  IRIS_CHECK(!ec, "cannot create checkpoint folder ", dir, ": ", ec.message());
  std::vector<Planned> all = plan(tensors, dir);

  // Greedy, in name order: start a new shard when the next tensor would overflow the current one.
  std::vector<std::vector<Planned>> shards(1);
  size_t cur = 0, total = 0;
  for (const Planned& e : all) {
    if (!shards.back().empty() && cur + e.nbytes > max_shard_bytes) {
      shards.emplace_back();
      cur = 0;
    }
    shards.back().push_back(e);
    cur += e.nbytes;
    total += e.nbytes;
  }

  const fs::path d(dir);
  std::set<std::string> keep;
  if (shards.size() == 1) {
    save_planned((d / "model.safetensors").string(), all, {{"format", "pt"}});
    keep.insert("model.safetensors");
  } else {
    nlohmann::json index;
    index["metadata"]["total_size"] = total;
    nlohmann::json& weight_map = index["weight_map"];
    for (size_t i = 0; i < shards.size(); ++i) {
      char name[64];
      std::snprintf(name, sizeof(name), "model-%05zu-of-%05zu.safetensors", i + 1, shards.size());
      save_planned((d / name).string(), shards[i], {{"format", "pt"}});
      keep.insert(name);
      for (const Planned& e : shards[i]) weight_map[*e.name] = name;
    }
    // The index goes last: a reader never sees an index naming shards that are not written yet.
    write_file_atomic((d / "model.safetensors.index.json").string(), index.dump(2) + "\n");
    keep.insert("model.safetensors.index.json");
  }

  // Remove the other layout's leftovers (what transformers' save_pretrained does for stale shards).
  // "model-NNNNN-of-NNNNN.safetensors"
  auto is_shard_name = [](const std::string& n) {
    if (n.size() != 32 || n.compare(0, 6, "model-") != 0 || n.compare(11, 4, "-of-") != 0 ||
        n.compare(20, 12, ".safetensors") != 0)
      return false;
    for (size_t i : {6, 7, 8, 9, 10, 15, 16, 17, 18, 19})
      if (n[i] < '0' || n[i] > '9') return false;
    return true;
  };
  std::vector<fs::path> stale;
  for (const auto& de : fs::directory_iterator(d, ec)) {
    std::string name = de.path().filename().string();
    bool ours = name == "model.safetensors" || name == "model.safetensors.index.json" ||
                is_shard_name(name);
    if (ours && !keep.count(name)) stale.push_back(de.path());
  }
  for (const auto& p : stale) fs::remove(p, ec);  // best effort: the new checkpoint is already complete
}

}  // namespace iris::io
