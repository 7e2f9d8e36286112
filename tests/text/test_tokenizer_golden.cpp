// Golden tests of the tokenizer against shared/tokenizers/{mistral,llama3,qwen2}/golden.jsonl (ids with and without
// special tokens, decoded text with and without clean-up), the streaming decoder on the same ids, the README's
// quirks, and a speed print for 100 KB of English.
#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <fstream>
#include <map>
#include <memory>
#include <sstream>
#include <thread>
#include <nlohmann/json.hpp>

#include "tensor/error.h"
#include "test_util.h"
#include "text/tokenizer.h"

using iris::text::StreamDecoder;
using iris::text::Tokenizer;
using Json = nlohmann::json;

namespace {

std::string tok_dir(const std::string& name) { return iris::test::shared_dir() + "/tokenizers/" + name; }

// Loading the large vocabularies takes a moment: each is loaded once for the whole test program.
const Tokenizer& shared_tokenizer(const std::string& name) {
  static std::map<std::string, std::unique_ptr<Tokenizer>> cache;
  auto& slot = cache[name];
  if (!slot) {
    const auto t0 = std::chrono::steady_clock::now();
    slot = std::make_unique<Tokenizer>(Tokenizer::from_dir(tok_dir(name)));
    const double ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
    std::printf("[ load     ] %s: %.0f ms\n", name.c_str(), ms);
  }
  return *slot;
}

struct GoldenRow {
  std::string text, decoded, decoded_raw;
  std::vector<int32_t> ids, ids_no_special;
};

std::vector<GoldenRow> read_golden(const std::string& name) {
  std::ifstream f(tok_dir(name) + "/golden.jsonl");
  EXPECT_TRUE(f.good()) << "missing golden.jsonl for " << name;
  std::vector<GoldenRow> rows;
  std::string line;
  while (std::getline(f, line)) {
    if (line.empty()) continue;
    const Json j = Json::parse(line);
    rows.push_back({j["text"].get<std::string>(), j["decoded"].get<std::string>(),
                    j["decoded_raw"].get<std::string>(), j["ids"].get<std::vector<int32_t>>(),
                    j["ids_no_special"].get<std::vector<int32_t>>()});
  }
  return rows;
}

std::string show(const std::vector<int32_t>& ids) {
  std::ostringstream os;
  os << '[';
  for (size_t k = 0; k < ids.size(); ++k) os << (k ? "," : "") << ids[k];
  os << ']';
  return os.str();
}

class TokenizerGolden : public ::testing::TestWithParam<std::string> {};

TEST_P(TokenizerGolden, MatchesEveryRow) {
  const Tokenizer& tok = shared_tokenizer(GetParam());
  const auto rows = read_golden(GetParam());
  ASSERT_GE(rows.size(), 60u);
  size_t pass = 0;
  for (const GoldenRow& r : rows) {
    SCOPED_TRACE("text: " + Json(r.text).dump());
    const auto ids = tok.encode(r.text);
    const auto ids_ns = tok.encode(r.text, false);
    const std::string dec = tok.decode(r.ids);
    const std::string dec_raw = tok.decode(r.ids, false, false);
    EXPECT_EQ(show(ids), show(r.ids));
    EXPECT_EQ(show(ids_ns), show(r.ids_no_special));
    EXPECT_EQ(dec, r.decoded);
    EXPECT_EQ(dec_raw, r.decoded_raw);
    pass += ids == r.ids && ids_ns == r.ids_no_special && dec == r.decoded && dec_raw == r.decoded_raw;
  }
  std::printf("[ golden   ] %s: %zu / %zu rows match (ids, ids_no_special, decoded, decoded_raw)\n",
              GetParam().c_str(), pass, rows.size());
  EXPECT_EQ(pass, rows.size());
}

// Pushing the golden ids one at a time gives exactly decode(ids) (without clean-up), never a broken character.
TEST_P(TokenizerGolden, StreamDecoderMatchesDecode) {
  const Tokenizer& tok = shared_tokenizer(GetParam());
  for (const GoldenRow& r : read_golden(GetParam())) {
    for (bool skip : {false, true}) {
      SCOPED_TRACE("text: " + Json(r.text).dump() + (skip ? " (skip special)" : ""));
      StreamDecoder sd(tok, skip);
      std::string all;
      for (int32_t id : r.ids) {
        const std::string piece = sd.push(id);
        EXPECT_FALSE(piece.find("\xEF\xBF\xBD") != std::string::npos && r.decoded_raw.find("\xEF\xBF\xBD") ==
                                                                            std::string::npos)
            << "emitted an incomplete character";
        all += piece;
      }
      all += sd.flush();
      EXPECT_EQ(all, tok.decode(r.ids, skip, false));
    }
  }
}

// About 100 KB of varied English (words drawn by a fixed pseudo-random sequence, so the pre-token cache does not
// make it trivial): prints the time; checks only that it round-trips.
std::string english_100kb() {
  static const char* const words[] = {
      "the", "of", "and", "to", "in", "a", "is", "that", "for", "it", "as", "was", "with", "be", "by", "on", "not",
      "he", "I", "this", "are", "or", "his", "from", "at", "which", "but", "have", "an", "had", "they", "you",
      "were", "their", "one", "all", "we", "can", "her", "has", "there", "been", "if", "more", "when", "will",
      "would", "who", "so", "no", "image", "model", "vision", "language", "tokenizer", "encoder", "attention",
      "transformer", "embedding", "gradient", "optimizer", "dataset", "evaluation", "benchmark", "inference",
      "quantization", "throughput", "latency", "photograph", "describe", "picture", "question", "answer",
      "mountain", "river", "beautiful", "quickly", "unbelievable", "internationalization", "doesn't", "they're",
      "we'll", "I'm", "it's", "Paris", "London", "Tokyo", "NASA", "GPU", "CPU", "COVID-19", "e-mail", "U.S."};
  static const char* const seps[] = {" ", " ", " ", " ", " ", " ", ", ", ". ", "; ", "! ", "? ", "\n", " (", ") ",
                                     ": ", " \"", "\" ", " - ", "\n\n", "  "};
  uint64_t state = 0x9E3779B97F4A7C15ull;
  const auto next = [&](uint64_t n) {
    state = state * 6364136223846793005ull + 1442695040888963407ull;
    return (state >> 33) % n;
  };
  std::string text;
  while (text.size() < 100 * 1024) {
    if (next(12) == 0) text += std::to_string(next(100000));
    else text += words[next(sizeof(words) / sizeof(words[0]))];
    text += seps[next(sizeof(seps) / sizeof(seps[0]))];
  }
  return text;
}

TEST_P(TokenizerGolden, SpeedOn100KBEnglish) {
  const Tokenizer& tok = shared_tokenizer(GetParam());
  const std::string text = english_100kb();
  const auto t0 = std::chrono::steady_clock::now();
  const auto ids = tok.encode(text, false);
  const auto t1 = std::chrono::steady_clock::now();
  const std::string back = tok.decode(ids, false, false);
  const auto t2 = std::chrono::steady_clock::now();
  std::printf("[ speed    ] %s: encode %zu bytes -> %zu ids in %.1f ms, decode in %.1f ms\n", GetParam().c_str(),
              text.size(), ids.size(), std::chrono::duration<double, std::milli>(t1 - t0).count(),
              std::chrono::duration<double, std::milli>(t2 - t1).count());
  EXPECT_EQ(back, text);
}

// encode is const and may be called from several threads (the pre-token cache is shared).
TEST_P(TokenizerGolden, ConcurrentEncodeAgrees) {
  const Tokenizer& tok = shared_tokenizer(GetParam());
  const auto rows = read_golden(GetParam());
  std::vector<std::vector<int32_t>> expected;
  for (const GoldenRow& r : rows) expected.push_back(r.ids);
  std::atomic<int> mismatches{0};
  const auto work = [&](int seed) {
    for (int rep = 0; rep < 20; ++rep) {
      for (size_t k = 0; k < rows.size(); ++k) {
        const size_t i = (k * 7 + size_t(seed) * 13 + size_t(rep)) % rows.size();
        if (tok.encode(rows[i].text) != expected[i]) ++mismatches;
      }
    }
  };
  std::thread a(work, 1), b(work, 2);
  work(3);
  a.join();
  b.join();
  EXPECT_EQ(mismatches.load(), 0);
}

INSTANTIATE_TEST_SUITE_P(Tokenizer, TokenizerGolden, ::testing::Values("mistral", "llama3", "qwen2"));

TEST(TokenizerReal, SpecialTokensAndConfig) {
  const Tokenizer& m = shared_tokenizer("mistral");
  EXPECT_EQ(m.vocab_size(), 32000);
  EXPECT_EQ(m.bos_id(), 1);
  EXPECT_EQ(m.eos_ids(), std::vector<int32_t>{2});
  EXPECT_EQ(m.bos_token(), "<s>");
  EXPECT_EQ(m.token_to_id("▁Hello"), 22557);
  EXPECT_EQ(m.id_to_token(22557), "▁Hello");
  EXPECT_EQ(m.id_to_token(13), "<0x0A>");
  EXPECT_TRUE(m.is_special(1));
  EXPECT_FALSE(m.is_special(22557));
  EXPECT_EQ(m.decode({1, 22557, 1526}), "<s> Hello world");
  EXPECT_EQ(m.decode({1, 22557, 1526}, true), "Hello world");
  EXPECT_EQ(m.decode({}), "");
  EXPECT_TRUE(m.chat_template().empty());
  EXPECT_THROW(m.id_to_token(32000), iris::Error);

  const Tokenizer& l = shared_tokenizer("llama3");
  EXPECT_EQ(l.vocab_size(), 128256);
  EXPECT_EQ(l.bos_id(), 128000);
  EXPECT_EQ(l.eos_ids(), std::vector<int32_t>{128009});
  EXPECT_EQ(l.encode("12345678", false), (std::vector<int32_t>{4513, 10961, 2495}));
  EXPECT_NE(l.chat_template().find("start_header_id"), std::string::npos);
  EXPECT_TRUE(l.clean_up_spaces_default());
  EXPECT_EQ(l.decode(l.encode("Hi , there .", false)), "Hi, there.");
  EXPECT_EQ(l.decode(l.encode("Hi , there .", false), false, false), "Hi , there .");

  const Tokenizer& q = shared_tokenizer("qwen2");
  EXPECT_EQ(q.vocab_size(), 151669);
  EXPECT_EQ(q.bos_id(), std::nullopt);
  EXPECT_EQ(q.bos_token(), "");
  EXPECT_EQ(q.eos_ids(), std::vector<int32_t>{151645});
  EXPECT_EQ(q.encode("<think>"), std::vector<int32_t>{151667});
  EXPECT_EQ(q.encode("e\xCC\x81"), std::vector<int32_t>{963});  // NFC composes e + U+0301
  EXPECT_TRUE(q.is_special(151643));
  EXPECT_FALSE(q.is_special(151667));  // <think> is an added token, not a special one
  EXPECT_EQ(q.decode({151644, 151667}, true), "<think>");
  EXPECT_FALSE(q.chat_template().empty());
}

// An engine-added image placeholder is split out of the text like the file's own added tokens.
TEST(TokenizerReal, AddedImageToken) {
  Tokenizer m = shared_tokenizer("mistral");
  EXPECT_EQ(m.encode("<image>", false).size(), 3u);  // "<", "image", ">" (plus the ▁ piece)
  const int32_t id = m.add_special_token("<image>");
  EXPECT_EQ(id, 32000);
  EXPECT_EQ(m.vocab_size(), 32001);
  EXPECT_EQ(m.token_to_id("<image>"), 32000);
  const auto ids = m.encode("USER: <image>\nWhat?");
  ASSERT_GE(ids.size(), 4u);
  EXPECT_EQ(std::count(ids.begin(), ids.end(), 32000), 1);
  EXPECT_NE(m.decode(ids).find("<image>"), std::string::npos);
  EXPECT_EQ(m.decode(ids, true).find("<image>"), std::string::npos);
  // The shared tokenizer (a copy) is unchanged.
  EXPECT_EQ(shared_tokenizer("mistral").vocab_size(), 32000);
}

}  // namespace
