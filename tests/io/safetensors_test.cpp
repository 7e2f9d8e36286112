// Tests for io/safetensors: the reference checkpoint, round trips, sharding, and a battery of corrupt files
// that must each fail with a clear iris::Error (never a crash).
#include "io/safetensors.h"

#include <gtest/gtest.h>

#include <cstring>
#include <filesystem>
#include <random>

#include "test_checks.h"
#include "test_util.h"

namespace fs = std::filesystem;
using iris::DType;
using iris::Error;
using iris::Shape;
using iris::Tensor;
using namespace iris::io;

using iris::test::bytes_of;
using iris::test::expect_error;
using iris::test::fresh_dir;
using iris::test::pattern;

namespace {

// A safetensors file from a literal header (not padded) and `data_size` zero bytes of data.
std::string crafted(const std::string& header, size_t data_size) {
  uint64_t n = header.size();
  std::string out(8, '\0');
  std::memcpy(out.data(), &n, 8);
  return out + header + std::string(data_size, '\0');
}

// Opens every tensor and touches all its bytes, so that any bad range would show up (under ASan too).
size_t touch_all(const SafetensorsFile& f) {
  size_t sum = 0;
  for (const auto& [name, info] : f.tensors()) {
    Tensor t = f.get(name);
    const auto* p = static_cast<const unsigned char*>(t.raw());
    for (size_t i = 0; i < t.nbytes(); ++i) sum += p[i];
  }
  return sum;
}

}  // namespace

// ---- the reference checkpoint ----

TEST(Safetensors, LoadsReferenceCheckpoint) {
  const std::string dir = iris::test::shared_dir() + "/refcases/llama_text";
  auto meta = read_json_file(dir + "/meta.json");
  const auto& expected = meta.at("weights").at("tensors");
  auto f = SafetensorsFile::open(dir + "/model.safetensors");
  ASSERT_EQ(f->tensors().size(), expected.size());
  EXPECT_EQ(f->tensors().size(), meta["weights"]["num_tensors"].get<size_t>());
  EXPECT_EQ(f->metadata().at("format"), "pt");
  const std::string raw = iris::test::read_file(dir + "/model.safetensors");
  for (const auto& [name, shape_json] : expected.items()) {
    ASSERT_TRUE(f->has(name)) << name;
    Shape shape = shape_json.get<Shape>();
    const TensorInfo& info = f->tensors().at(name);
    EXPECT_EQ(info.shape, shape) << name;
    EXPECT_EQ(info.dtype, *iris::dtype_from_name(meta["weights"]["dtype"].get<std::string>()));
    Tensor t = f->get(name);
    EXPECT_EQ(t.shape(), shape) << name;
    EXPECT_EQ(t.dtype(), DType::F32);
    ASSERT_EQ(t.nbytes(), info.nbytes);
    EXPECT_EQ(std::memcmp(t.raw(), raw.data() + info.offset, info.nbytes), 0) << name;
    EXPECT_EQ(f->get(name).raw(), t.raw()) << "get() must be a zero-copy view of the mapping";
  }
  EXPECT_THROW(f->get("model.nope"), Error);
}

// The other model cases too (CLIP names, LLaVA's prefixed names): names and shapes as meta.json lists them.
TEST(Safetensors, AllReferenceCheckpointsMatchMeta) {
  for (const char* c : {"llama_text", "clip_vision", "llava"}) {
    SCOPED_TRACE(c);
    const std::string dir = iris::test::shared_dir() + "/refcases/" + c;
    auto meta = read_json_file(dir + "/meta.json");
    Checkpoint ck = Checkpoint::open(dir);
    const auto& expected = meta.at("weights").at("tensors");
    EXPECT_EQ(ck.size(), expected.size());
    for (const auto& [name, shape] : expected.items()) {
      ASSERT_TRUE(ck.has(name)) << name;
      EXPECT_EQ(ck.info(name).shape, shape.get<Shape>()) << name;
      EXPECT_EQ(ck.get(name).shape(), shape.get<Shape>()) << name;
    }
  }
}

TEST(Safetensors, CheckpointOpensReferenceFolderAndFile) {
  const std::string dir = iris::test::shared_dir() + "/refcases/llama_text";
  auto meta = read_json_file(dir + "/meta.json");
  Checkpoint ck = Checkpoint::open(dir);
  std::vector<std::string> names;
  for (const auto& [name, shape] : meta["weights"]["tensors"].items()) names.push_back(name);
  std::sort(names.begin(), names.end());
  EXPECT_EQ(ck.names(), names);
  for (const auto& n : names) EXPECT_EQ(ck.get(n).shape(), meta["weights"]["tensors"][n].get<Shape>());
  EXPECT_EQ(Checkpoint::open(dir + "/model.safetensors").names(), names);
  expect_error([&] { ck.get("model.layers.9.mlp.up_proj.weight"); },
               {"model.layers.9.mlp.up_proj.weight", dir});
}

TEST(Safetensors, TensorKeepsMappingAlive) {
  const std::string path = iris::test::shared_dir() + "/refcases/llama_text/model.safetensors";
  Tensor t;
  std::vector<float> copy;
  {
    Checkpoint ck = Checkpoint::open(path);
    t = ck.get("model.norm.weight");
    copy.assign(t.data<float>(), t.data<float>() + t.numel());
  }
  EXPECT_EQ(std::vector<float>(t.data<float>(), t.data<float>() + t.numel()), copy);
}

// ---- round trips ----

TEST(Safetensors, RoundTripEveryDtype) {
  std::string d = fresh_dir("roundtrip");
  NamedTensors in;
  const std::vector<DType> dtypes = {DType::F32, DType::BF16, DType::F16, DType::I64, DType::F64,
                                     DType::I32, DType::I16,  DType::I8,  DType::U8,  DType::BOOL};
  int k = 0;
  for (DType dt : dtypes) {
    std::string n = iris::dtype_name(dt);
    in.push_back({"w." + n, pattern({3, 5}, dt, k++)});
    in.push_back({"scalar." + n, pattern({}, dt, k++)});
    in.push_back({"empty." + n, pattern({4, 0, 2}, dt, k++)});
  }
  save_safetensors(d + "/m.safetensors", in);
  auto f = SafetensorsFile::open(d + "/m.safetensors");
  ASSERT_EQ(f->tensors().size(), in.size());
  EXPECT_EQ(f->metadata(), (std::map<std::string, std::string>{{"format", "pt"}}));
  for (const auto& [name, t] : in) {
    Tensor r = f->get(name);
    EXPECT_EQ(r.dtype(), t.dtype()) << name;
    EXPECT_EQ(r.shape(), t.shape()) << name;
    EXPECT_EQ(bytes_of(r), bytes_of(t)) << name;
  }
  EXPECT_EQ(iris::test::read_file(d + "/m.safetensors"), safetensors_bytes(in));
}

TEST(Safetensors, WriterLayout) {
  std::string d = fresh_dir("layout");
  // Out of order and non-contiguous on input; sorted and contiguous on output.
  Tensor base = pattern({4, 6}, DType::F32);
  NamedTensors in = {{"zeta", base.transpose(0, 1)}, {"alpha", pattern({3}, DType::BF16)}};
  save_safetensors(d + "/l.safetensors", in, {{"format", "pt"}, {"note", "quote \" and ü"}});
  std::string raw = iris::test::read_file(d + "/l.safetensors");
  uint64_t n;
  std::memcpy(&n, raw.data(), 8);
  EXPECT_EQ(n % 8, 0u);
  std::string header = raw.substr(8, n);
  EXPECT_EQ(header.find("{\"__metadata__\":"), 0u) << header;
  EXPECT_LT(header.find("\"alpha\""), header.find("\"zeta\""));
  EXPECT_EQ(header.substr(header.rfind('}') + 1).find_first_not_of(' '), std::string::npos);  // space padding
  auto f = SafetensorsFile::open(d + "/l.safetensors");
  EXPECT_EQ(f->metadata().at("note"), "quote \" and ü");
  Tensor z = f->get("zeta");
  EXPECT_EQ(z.shape(), (Shape{6, 4}));
  EXPECT_EQ(bytes_of(z), bytes_of(base.transpose(0, 1).contiguous()));
  EXPECT_LT(f->info("alpha").offset, f->info("zeta").offset);

  save_safetensors(d + "/nometa.safetensors", in, {});
  EXPECT_TRUE(SafetensorsFile::open(d + "/nometa.safetensors")->metadata().empty());
  save_safetensors(d + "/none.safetensors", {});
  EXPECT_TRUE(SafetensorsFile::open(d + "/none.safetensors")->tensors().empty());

  expect_error(
      [&] {
        save_safetensors(d + "/dup.safetensors", {{"a", base}, {"a", base}});
      },
      {"duplicate", "'a'"});
  expect_error([&] { save_safetensors(d + "/undef.safetensors", {{"a", Tensor()}}); }, {"undefined", "'a'"});
  EXPECT_FALSE(fs::exists(d + "/dup.safetensors"));
}

TEST(Safetensors, OverwriteWhileMapped) {
  std::string d = fresh_dir("overwrite");
  save_safetensors(d + "/m.safetensors",
                   {{"a", pattern({8}, DType::F32, 1)}, {"b", pattern({2}, DType::F32, 2)}});
  Checkpoint ck = Checkpoint::open(d + "/m.safetensors");
  Tensor a = ck.get("a");
  std::string before = bytes_of(a);
  // Re-saving from tensors borrowed from the file being replaced: the rename leaves the old mapping intact.
  save_safetensors(d + "/m.safetensors", {{"a", a}, {"c", pattern({3}, DType::F32, 3)}});
  EXPECT_EQ(bytes_of(a), before);
  Checkpoint again = Checkpoint::open(d + "/m.safetensors");
  EXPECT_EQ(again.names(), (std::vector<std::string>{"a", "c"}));
  EXPECT_EQ(bytes_of(again.get("a")), before);
}

TEST(Safetensors, MisalignedDataIsCopied) {
  std::string d = fresh_dir("misaligned");
  // The data section starts at an odd byte offset. Hugging Face pads; other writers may not.
  std::string header = R"({"x":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}})";
  while ((8 + header.size()) % 4 != 1) header += ' ';
  std::string file = crafted(header, 0);
  float v[2] = {1.5f, -2.25f};
  file.append(reinterpret_cast<const char*>(v), 8);
  iris::test::write_file(d + "/m.safetensors", file);
  Tensor t = SafetensorsFile::open(d + "/m.safetensors")->get("x");
  EXPECT_EQ(reinterpret_cast<uintptr_t>(t.raw()) % 4, 0u);
  EXPECT_EQ(t.data<float>()[0], 1.5f);
  EXPECT_EQ(t.data<float>()[1], -2.25f);
}

// ---- sharded checkpoints ----

TEST(Safetensors, ShardedSaveAndOpen) {
  std::string d = fresh_dir("sharded");
  NamedTensors in;
  for (int i = 0; i < 7; ++i)
    in.push_back({"layer." + std::to_string(i) + ".w", pattern({10, 10}, DType::F32, i)});
  in.push_back({"big", pattern({1000}, DType::F32, 9)});  // larger than a shard: a shard of its own
  in.push_back({"half", pattern({16}, DType::BF16, 10)});
  save_safetensors_sharded(d, in, 1000);  // 400-byte tensors: two per shard

  auto index = read_json_file(d + "/model.safetensors.index.json");
  size_t total = 0;
  for (const auto& [n, t] : in) total += t.nbytes();
  EXPECT_EQ(index["metadata"]["total_size"].get<size_t>(), total);
  EXPECT_EQ(index["weight_map"].size(), in.size());
  // Sorted: big (4000 B, alone) | half + layer.0 + layer.1 | layer.2 + layer.3 | layer.4 + layer.5 | layer.6
  EXPECT_EQ(index["weight_map"]["big"], "model-00001-of-00005.safetensors");
  EXPECT_EQ(index["weight_map"]["layer.1.w"], "model-00002-of-00005.safetensors");
  EXPECT_EQ(index["weight_map"]["layer.2.w"], "model-00003-of-00005.safetensors");
  EXPECT_EQ(index["weight_map"]["layer.6.w"], "model-00005-of-00005.safetensors");
  EXPECT_FALSE(fs::exists(d + "/model.safetensors"));
  for (int s = 2; s <= 5; ++s) {
    char name[64];
    std::snprintf(name, sizeof(name), "/model-%05d-of-00005.safetensors", s);
    EXPECT_LE(fs::file_size(d + name), 1000u + 512u) << name;
  }

  Checkpoint ck = Checkpoint::open(d);
  ASSERT_EQ(ck.size(), in.size());
  EXPECT_EQ(ck.files().size(), 5u);
  for (const auto& [name, t] : in) {
    EXPECT_EQ(bytes_of(ck.get(name)), bytes_of(t)) << name;
    EXPECT_EQ(ck.info(name).file, d + "/" + index["weight_map"][name].get<std::string>());
  }

  // Saving the same folder as one file replaces the shards (no stale index or shards left to confuse a
  // reader).
  save_safetensors_sharded(d, in, size_t(1) << 30);
  std::vector<std::string> files;
  for (const auto& e : fs::directory_iterator(d)) files.push_back(e.path().filename().string());
  EXPECT_EQ(files, std::vector<std::string>{"model.safetensors"});
  EXPECT_EQ(Checkpoint::open(d).size(), in.size());

  // And back to shards: the stale single file goes.
  save_safetensors_sharded(d, in, 1000);
  EXPECT_FALSE(fs::exists(d + "/model.safetensors"));
  EXPECT_EQ(Checkpoint::open(d).size(), in.size());
}

TEST(Safetensors, ShardedIndexErrors) {
  std::string d = fresh_dir("shard_err");
  NamedTensors in = {{"a", pattern({100}, DType::F32)}, {"b", pattern({100}, DType::F32)}};
  save_safetensors_sharded(d, in, 500);
  const std::string index = d + "/model.safetensors.index.json";
  const std::string good = iris::test::read_file(index);

  fs::rename(d + "/model-00002-of-00002.safetensors", d + "/moved.safetensors");
  expect_error([&] { Checkpoint::open(d); }, {"model-00002-of-00002.safetensors", "missing", "'b'"});
  fs::rename(d + "/moved.safetensors", d + "/model-00002-of-00002.safetensors");

  auto j = nlohmann::json::parse(good);
  j["weight_map"]["ghost"] = "model-00001-of-00002.safetensors";
  iris::test::write_file(index, j.dump());
  expect_error([&] { Checkpoint::open(d); }, {"ghost", "model-00001-of-00002.safetensors", "does not hold"});

  j = nlohmann::json::parse(good);
  j["weight_map"]["a"] = "../../etc/passwd";
  iris::test::write_file(index, j.dump());
  expect_error([&] { Checkpoint::open(d); }, {index, "../../etc/passwd"});

  j = nlohmann::json::parse(good);
  j["weight_map"]["a"] = 3;
  iris::test::write_file(index, j.dump());
  expect_error([&] { Checkpoint::open(d); }, {index, "'a'"});

  iris::test::write_file(index, "{\"weight_map\": [");
  expect_error([&] { Checkpoint::open(d); }, {index, "invalid JSON"});
  iris::test::write_file(index, "{\"metadata\": {}}");
  expect_error([&] { Checkpoint::open(d); }, {index, "weight_map"});

  iris::test::write_file(index, good);
  EXPECT_EQ(Checkpoint::open(d).size(), 2u);
}

TEST(Safetensors, CheckpointFallbackAndErrors) {
  std::string d = fresh_dir("fallback");
  save_safetensors(d + "/one.safetensors", {{"a", pattern({2}, DType::F32)}});
  save_safetensors(d + "/two.safetensors", {{"b", pattern({3}, DType::F32)}});
  iris::test::write_file(d + "/notes.txt", "not a checkpoint");
  Checkpoint ck = Checkpoint::open(d);
  EXPECT_EQ(ck.names(), (std::vector<std::string>{"a", "b"}));
  EXPECT_EQ(ck.info("b").file, d + "/two.safetensors");

  save_safetensors(d + "/three.safetensors", {{"a", pattern({2}, DType::F32)}});
  expect_error([&] { Checkpoint::open(d); }, {"'a'", "one.safetensors", "three.safetensors"});

  std::string empty = fresh_dir("fallback_empty");
  expect_error([&] { Checkpoint::open(empty); }, {empty, "model.safetensors"});
  expect_error([&] { Checkpoint::open(empty + "/nothing"); }, {empty + "/nothing"});
}

// ---- corrupt files ----

struct Corrupt {
  const char* label;
  std::string bytes;
  std::vector<std::string> hints;  // besides the file name
};

TEST(Safetensors, CorruptionBattery) {
  std::string d = fresh_dir("corrupt");
  const std::string ok_entry = R"("ok":{"dtype":"F32","shape":[2],"data_offsets":[0,8]})";
  auto one = [](const std::string& entry, size_t data) { return crafted("{" + entry + "}", data); };
  std::string huge_len(8, '\0');
  uint64_t big = 200'000'000;
  std::memcpy(huge_len.data(), &big, 8);
  std::string past_end(8, '\0');
  uint64_t past = 64;
  std::memcpy(past_end.data(), &past, 8);
  past_end += "{}";

  const std::vector<Corrupt> cases = {
      {"short", "abc", {"too short"}},
      {"empty", "", {"too short"}},
      {"header_past_end", past_end, {"header length 64", "larger than the file"}},
      {"header_huge", huge_len + "{}", {"header length 200000000", "limit"}},
      {"not_json", crafted("{\"a\": nope}", 0), {"header", "not valid JSON", "line 1"}},
      {"empty_header", crafted("", 0), {"header", "not valid JSON"}},
      {"truncated_json", crafted("{\"a\":{\"dtype\":\"F32\"", 0), {"header", "not valid JSON"}},
      {"array_header", crafted("[1,2]", 0), {"header", "not a JSON object"}},
      {"bad_utf8", crafted("{\"\xff\":{}}", 0), {"header", "not valid JSON"}},
      {"entry_not_object", one(R"("w":[1])", 0), {"'w'", "not an object"}},
      {"missing_dtype", one(R"("w":{"shape":[2],"data_offsets":[0,8]})", 8), {"'w'", "missing 'dtype'"}},
      {"missing_shape", one(R"("w":{"dtype":"F32","data_offsets":[0,8]})", 8), {"'w'", "missing 'shape'"}},
      {"missing_offsets", one(R"("w":{"dtype":"F32","shape":[2]})", 8), {"'w'", "missing 'data_offsets'"}},
      {"unknown_dtype",
       one(R"("w":{"dtype":"F8_E4M3","shape":[2],"data_offsets":[0,2]})", 2),
       {"'w'", "F8_E4M3", "dtype"}},
      {"dtype_not_string", one(R"("w":{"dtype":4,"shape":[2],"data_offsets":[0,8]})", 8), {"'w'", "'dtype'"}},
      {"negative_dim",
       one(R"("w":{"dtype":"F32","shape":[-2],"data_offsets":[0,8]})", 8),
       {"'w'", "negative"}},
      {"float_dim",
       one(R"("w":{"dtype":"F32","shape":[2.5],"data_offsets":[0,8]})", 8),
       {"'w'", "non-integer"}},
      {"string_dim", one(R"("w":{"dtype":"F32","shape":["2"],"data_offsets":[0,8]})", 8), {"'w'", "'shape'"}},
      {"shape_not_array",
       one(R"("w":{"dtype":"F32","shape":2,"data_offsets":[0,8]})", 8),
       {"'w'", "not an array"}},
      {"huge_dim",
       one(R"("w":{"dtype":"F32","shape":[18446744073709551615],"data_offsets":[0,8]})", 8),
       {"'w'", "too large"}},
      {"overflow",
       one(R"("w":{"dtype":"F32","shape":[4294967296,4294967296],"data_offsets":[0,8]})", 8),
       {"'w'", "overflow"}},
      {"begin_after_end",
       one(R"("w":{"dtype":"F32","shape":[0],"data_offsets":[8,0]})", 8),
       {"'w'", "begin is after end"}},
      {"end_past_data",
       one(R"("w":{"dtype":"F32","shape":[4],"data_offsets":[0,16]})", 8),
       {"'w'", "beyond the data section"}},
      {"size_mismatch",
       one(R"("w":{"dtype":"F32","shape":[3],"data_offsets":[0,8]})", 8),
       {"'w'", "needs 12"}},
      {"three_offsets",
       one(R"("w":{"dtype":"F32","shape":[2],"data_offsets":[0,8,8]})", 8),
       {"'w'", "data_offsets"}},
      {"one_offset",
       one(R"("w":{"dtype":"F32","shape":[2],"data_offsets":[0]})", 8),
       {"'w'", "data_offsets"}},
      {"negative_offset",
       one(R"("w":{"dtype":"F32","shape":[2],"data_offsets":[-8,0]})", 8),
       {"'w'", "negative"}},
      {"overlap",
       crafted("{" + ok_entry + R"(,"w":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}})", 12),
       {"'w'", "overlap", "'ok'"}},
      {"gap",
       crafted("{" + ok_entry + R"(,"w":{"dtype":"F32","shape":[2],"data_offsets":[12,20]}})", 20),
       {"'w'", "gap of 4 bytes"}},
      {"gap_at_start", one(R"("w":{"dtype":"F32","shape":[2],"data_offsets":[4,12]})", 12), {"'w'", "gap"}},
      {"trailing", one(ok_entry, 12), {"trailing"}},
      {"duplicate_name", crafted("{" + ok_entry + "," + ok_entry + "}", 8), {"duplicate", "'ok'"}},
      {"duplicate_field",
       one(R"("w":{"dtype":"F32","dtype":"F32","shape":[2],"data_offsets":[0,8]})", 8),
       {"'w'", "duplicate field"}},
      {"metadata_not_object", crafted(R"({"__metadata__":[]})", 0), {"__metadata__", "not an object"}},
      {"metadata_value",
       crafted(R"({"__metadata__":{"format":1}})", 0),
       {"__metadata__", "'format'", "not a string"}},
  };
  for (const Corrupt& c : cases) {
    SCOPED_TRACE(c.label);
    std::string path = d + "/" + c.label + ".safetensors";
    iris::test::write_file(path, c.bytes);
    try {
      SafetensorsFile::open(path);
      ADD_FAILURE() << c.label << ": opened without error";
    } catch (const Error& e) {
      std::string msg = e.what();
      EXPECT_NE(msg.find(path), std::string::npos) << msg;
      for (const auto& h : c.hints) EXPECT_NE(msg.find(h), std::string::npos) << msg << "\n  missing: " << h;
    }
  }
}

TEST(Safetensors, UnknownFieldsAreIgnored) {
  std::string d = fresh_dir("unknown_fields");
  std::string h = R"({"w":{"extra":{"deep":[1,[2,{"x":null}],true]},"dtype":"F32","shape":[2],"more":"s",)"
                  R"("data_offsets":[0,8]},"__metadata__":{}})";
  iris::test::write_file(d + "/u.safetensors", crafted(h, 8));
  auto f = SafetensorsFile::open(d + "/u.safetensors");
  EXPECT_EQ(f->get("w").shape(), Shape{2});
}

// Deep nesting inside an ignored field must not recurse on the stack.
TEST(Safetensors, DeepNestingIsHarmless) {
  std::string d = fresh_dir("deep");
  const size_t depth = 200000;
  std::string h = R"({"w":{"x":)" + std::string(depth, '[') + std::string(depth, ']') +
                  R"(,"dtype":"F32","shape":[2],"data_offsets":[0,8]}})";
  iris::test::write_file(d + "/n.safetensors", crafted(h, 8));
  EXPECT_EQ(SafetensorsFile::open(d + "/n.safetensors")->get("w").shape(), Shape{2});
  std::string bad = R"({"w":)" + std::string(depth, '[') + "}";
  iris::test::write_file(d + "/bad.safetensors", crafted(bad, 0));
  expect_error([&] { SafetensorsFile::open(d + "/bad.safetensors"); },
               {"bad.safetensors", "'w'", "not an object"});
}

TEST(Safetensors, ManyDimsAreBounded) {
  std::string d = fresh_dir("dims");
  std::string dims;
  for (int i = 0; i < 300; ++i) dims += i ? ",1" : "1";
  std::string h = R"({"w":{"dtype":"F32","shape":[)" + dims + R"(],"data_offsets":[0,4]}})";
  iris::test::write_file(d + "/m.safetensors", crafted(h, 4));
  expect_error([&] { SafetensorsFile::open(d + "/m.safetensors"); }, {"m.safetensors", "'w'", "dimensions"});
}

// Every prefix of a valid file (every 7 bytes, and all short ones) either opens or throws iris::Error.
TEST(Safetensors, TruncationNeverCrashes) {
  std::string d = fresh_dir("truncate");
  NamedTensors in = {{"a", pattern({5, 3}, DType::F32)},
                     {"b", pattern({7}, DType::BF16)},
                     {"c", pattern({2, 2}, DType::I64)},
                     {"d", pattern({}, DType::F16)}};
  const std::string full = safetensors_bytes(in);
  const std::string path = d + "/t.safetensors";
  int opened = 0, failed = 0;
  for (size_t len = 0; len <= full.size(); len += (len < 32 ? 1 : 7)) {
    iris::test::write_file(path, full.substr(0, len));
    try {
      touch_all(*SafetensorsFile::open(path));
      ++opened;
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find(path), std::string::npos) << e.what();
      ++failed;
    }
  }
  iris::test::write_file(path, full);
  EXPECT_NO_THROW(touch_all(*SafetensorsFile::open(path)));
  EXPECT_LE(opened, 1);  // only the whole file is valid
  EXPECT_GT(failed, 20);
}

// Random single-byte changes in the header: each file opens (and every tensor reads in bounds) or throws.
TEST(Safetensors, HeaderByteFlipsNeverCrash) {
  std::string d = fresh_dir("flips");
  NamedTensors in = {{"a", pattern({5, 3}, DType::F32)},
                     {"b", pattern({7}, DType::BF16)},
                     {"c", pattern({2, 2}, DType::I64)}};
  const std::string full = safetensors_bytes(in);
  uint64_t n;
  std::memcpy(&n, full.data(), 8);
  const std::string path = d + "/f.safetensors";
  const char replacements[] = {'0', '9', '1', '"', '{',  '}',    '[', ']',
                               ',', ':', '-', ' ', '\0', '\xff', 'e', '.'};
  std::mt19937 rng(42);
  int opened = 0;
  for (size_t pos = 0; pos < 8 + n; ++pos) {
    for (int k = 0; k < 3; ++k) {
      std::string bad = full;
      bad[pos] = replacements[rng() % sizeof(replacements)];
      iris::test::write_file(path, bad);
      try {
        touch_all(*SafetensorsFile::open(path));
        ++opened;
      } catch (const Error&) {
      }
    }
  }
  EXPECT_GT(opened, 0);  // some changes are harmless (padding, digits in equal-length names)
}
