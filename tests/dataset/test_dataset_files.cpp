// Reading LLaVA conversation JSON / JSONL and caption JSONL: fields, roles, <image> markers, and bad entries
// (counted and skipped, or fatal with the file, line/entry and id in strict mode).
#include <gtest/gtest.h>

#include <set>

#include "data/dataset.h"
#include "fixtures.h"

namespace iris::data {
namespace {

using iris::test::temp_dir;
using iris::test::write_file;

class Quiet : public ::testing::Test {
 protected:
  void SetUp() override {
    set_warning_sink([this](const std::string& m) { printed.push_back(m); });
  }
  void TearDown() override { set_warning_sink(nullptr); }
  std::vector<std::string> printed;
};

using LlavaJson = Quiet;

const char* kGoodAndBad = R"([
  {"id": "a", "image": "img0.png", "conversations": [
    {"from": "human", "value": "<image>\nWhat is this?"}, {"from": "gpt", "value": "A pattern."},
    {"from": "human", "value": "Sure?"}, {"from": "gpt", "value": "Yes."}]},
  {"id": 7, "conversations": [{"from": "system", "value": "Be kind."},
    {"from": "user", "value": "Hi"}, {"from": "assistant", "value": "Hello!"}]},
  {"id": "two", "image": ["img1.png", "img2.png"], "conversations": [
    {"from": "human", "value": "Compare <image> and <image> please."}, {"from": "gpt", "value": "Same."}]},
  {"id": "nomarker", "image": "img3.png", "conversations": [
    {"from": "gpt", "value": "Hi first"}, {"from": "human", "value": "Describe."}, {"from": "gpt", "value": "Blue."}]},
  {"id": "noasst", "conversations": [{"from": "human", "value": "Anyone?"}]},
  {"id": "badrole", "conversations": [{"from": "robot", "value": "x"}, {"from": "gpt", "value": "y"}]},
  {"id": "mismatch", "image": "img0.png", "conversations": [
    {"from": "human", "value": "<image>\n<image>\nTwo?"}, {"from": "gpt", "value": "One."}]},
  {"id": "markeronly", "conversations": [{"from": "human", "value": "<image>\nThis?"}, {"from": "gpt", "value": "?"}]},
  {"id": "badvalue", "conversations": [{"from": "human", "value": 3}, {"from": "gpt", "value": "y"}]},
  {"id": "badimage", "image": 5, "conversations": [{"from": "human", "value": "x"}, {"from": "gpt", "value": "y"}]},
  42,
  {"id": "noconv"},
  {"conversations": [{"from": "human", "value": "no id"}, {"from": "gpt", "value": "fine"}]}
])";

TEST_F(LlavaJson, ParsesAndSkips) {
  const std::string path = temp_dir() + "/llava.json";
  write_file(path, kGoodAndBad);
  LoadReport r;
  std::vector<Sample> s = load_llava_json(path, &r);
  ASSERT_EQ(s.size(), 5u);
  EXPECT_EQ(r.loaded, 5);
  EXPECT_EQ(r.skipped_for(skip_reason::kNoAssistant), 1);
  EXPECT_EQ(r.skipped_for(skip_reason::kMalformed), 5);  // badrole, badvalue, badimage, 42, noconv
  EXPECT_EQ(r.skipped_for(skip_reason::kImageMismatch), 2);  // mismatch, markeronly
  EXPECT_EQ(r.total_skipped(), 8);
  EXPECT_EQ(printed.size(), 8u);
  EXPECT_EQ(r.warnings.size(), 8u);
  EXPECT_NE(r.summary().find("malformed 5"), std::string::npos) << r.summary();

  EXPECT_EQ(s[0].id, "a");
  EXPECT_EQ(s[0].image_paths, std::vector<std::string>{"img0.png"});
  ASSERT_EQ(s[0].turns.size(), 4u);
  EXPECT_EQ(s[0].turns[0].role, "user");
  EXPECT_EQ(s[0].turns[0].text, "What is this?");
  EXPECT_EQ(s[0].turns[0].n_images, 1);
  EXPECT_EQ(s[0].turns[1].role, "assistant");
  EXPECT_EQ(s[0].turns[1].text, "A pattern.");
  EXPECT_EQ(s[1].id, "7");
  EXPECT_EQ(s[1].turns[0].role, "system");
  EXPECT_TRUE(s[1].image_paths.empty());
  EXPECT_EQ(s[2].turns[0].n_images, 2);
  EXPECT_EQ(s[2].turns[0].text, "Compare  and  please.");
  // The leading assistant turn is dropped; no marker: the image goes to the first user turn.
  ASSERT_EQ(s[3].turns.size(), 2u);
  EXPECT_EQ(s[3].turns[0].role, "user");
  EXPECT_EQ(s[3].turns[0].n_images, 1);
  EXPECT_EQ(s[3].turns[1].text, "Blue.");
  EXPECT_EQ(s[4].id, "12");  // the entry index when there is no id
  // Messages name the file, the entry and the id.
  bool named = false;
  for (const std::string& w : r.warnings)
    named = named || (w.find("llava.json: entry 5 (id \"badrole\")") != std::string::npos &&
                      w.find("robot") != std::string::npos);
  EXPECT_TRUE(named);
}

TEST_F(LlavaJson, StrictThrowsNamingTheEntry) {
  const std::string path = temp_dir() + "/llava_strict.json";
  write_file(path, kGoodAndBad);
  try {
    load_llava_json(path, nullptr, true);
    FAIL() << "expected iris::Error";
  } catch (const DataError&) {
    FAIL() << "strict mode must throw a plain iris::Error";
  } catch (const iris::Error& e) {
    EXPECT_NE(std::string(e.what()).find("entry 4 (id \"noasst\")"), std::string::npos) << e.what();
  }
}

TEST_F(LlavaJson, BrokenArrayIsFatal) {
  const std::string path = temp_dir() + "/broken.json";
  write_file(path, "[{\"id\": \"a\", \"conversations\": [}]");
  EXPECT_THROW(load_llava_json(path), iris::Error);
  EXPECT_THROW(load_llava_json(temp_dir() + "/does_not_exist.json"), iris::Error);
}

TEST_F(LlavaJson, JsonLinesWithBadLines) {
  const std::string path = temp_dir() + "/llava.jsonl";
  write_file(path,
             "{\"id\": \"x\", \"conversations\": [{\"from\": \"human\", \"value\": \"q\"}, {\"from\": \"gpt\", "
             "\"value\": \"a\"}]}\n"
             "\n"
             "{not json\n"
             "{\"id\": \"y\", \"conversations\": [{\"from\": \"human\", \"value\": \"q\"}]}\n"
             "{\"conversations\": [{\"from\": \"human\", \"value\": \"q2\"}, {\"from\": \"gpt\", \"value\": "
             "\"a2\"}]}\r\n");
  LoadReport r;
  std::vector<Sample> s = load_llava_json(path, &r);
  ASSERT_EQ(s.size(), 2u);
  EXPECT_EQ(s[0].id, "x");
  EXPECT_EQ(s[1].id, "line 5");
  EXPECT_EQ(r.skipped_for(skip_reason::kMalformed), 1);
  EXPECT_EQ(r.skipped_for(skip_reason::kNoAssistant), 1);
  ASSERT_EQ(r.warnings.size(), 2u);
  EXPECT_NE(r.warnings[0].find("llava.jsonl:3"), std::string::npos) << r.warnings[0];
  EXPECT_NE(r.warnings[1].find("llava.jsonl:4 (id \"y\")"), std::string::npos) << r.warnings[1];
  try {
    load_llava_json(path, nullptr, true);
    FAIL();
  } catch (const iris::Error& e) {
    EXPECT_NE(std::string(e.what()).find("llava.jsonl:3"), std::string::npos) << e.what();
  }
}

TEST_F(LlavaJson, WarningsAreCappedButCounted) {
  const std::string path = temp_dir() + "/many_bad.jsonl";
  std::string text;
  for (int i = 0; i < 50; ++i) text += "{bad\n";
  write_file(path, text);
  LoadReport r;
  EXPECT_TRUE(load_llava_json(path, &r).empty());
  EXPECT_EQ(r.skipped_for(skip_reason::kMalformed), 50);
  EXPECT_EQ(r.warnings.size(), LoadReport::kMaxWarnings);
  EXPECT_EQ(printed.size(), LoadReport::kMaxWarnings);
}

using CaptionJsonl = Quiet;

TEST_F(CaptionJsonl, InstructionsFromSeed) {
  const std::string path = temp_dir() + "/captions.jsonl";
  std::string text;
  for (int i = 0; i < 40; ++i)
    text += "{\"image\": \"img" + std::to_string(i) + ".png\", \"caption\": \"caption " + std::to_string(i) + "\"}\n";
  text += "{\"image\": \"x.png\"}\n";                        // no caption
  text += "{\"caption\": \"no image\"}\n";                   // no image
  text += "[1, 2]\n";                                        // not an object
  text += "{\"image\": \"y.png\", \"caption\": \"  \"}\n";  // empty caption
  text += "{\"id\": \"named\", \"image\": \"z.png\", \"caption\": \"ok\"}\n";
  write_file(path, text);
  LoadReport r;
  std::vector<Sample> a = load_caption_jsonl(path, 1, &r);
  ASSERT_EQ(a.size(), 41u);
  EXPECT_EQ(r.skipped_for(skip_reason::kMalformed), 3);
  EXPECT_EQ(r.skipped_for(skip_reason::kNoAssistant), 1);
  EXPECT_EQ(a.back().id, "named");
  EXPECT_EQ(a[0].id, "line 1");
  std::set<std::string> used;
  for (const Sample& s : a) {
    ASSERT_EQ(s.turns.size(), 2u);
    EXPECT_EQ(s.turns[0].role, "user");
    EXPECT_EQ(s.turns[0].n_images, 1);
    EXPECT_EQ(s.turns[1].role, "assistant");
    ASSERT_EQ(s.image_paths.size(), 1u);
    const auto& p = caption_prompts();
    EXPECT_NE(std::find(p.begin(), p.end(), s.turns[0].text), p.end());
    used.insert(s.turns[0].text);
  }
  EXPECT_GT(used.size(), 3u);  // several prompts over 41 lines
  EXPECT_EQ(a[5].turns[1].text, "caption 5");
  // Same seed: same prompts; another seed: some differ.
  std::vector<Sample> b = load_caption_jsonl(path, 1);
  std::vector<Sample> c = load_caption_jsonl(path, 2);
  int differ = 0;
  for (size_t i = 0; i < a.size(); ++i) {
    EXPECT_EQ(a[i].turns[0].text, b[i].turns[0].text);
    differ += a[i].turns[0].text != c[i].turns[0].text;
  }
  EXPECT_GT(differ, 5);
  EXPECT_THROW(load_caption_jsonl(path, 1, nullptr, true), iris::Error);
}

}  // namespace
}  // namespace iris::data
