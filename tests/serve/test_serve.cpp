// The server's pure parts, without a model or a socket: request parsing and validation, base64 and data URLs,
// confined local image paths, OpenAI response shapes, the constant-time key comparison. The HTTP server
// itself is driven end to end by the node tests beside this file.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>

#include "serve/chat_request.h"
#include "serve/errors.h"
#include "serve/images.h"
#include "serve/net_util.h"
#include "serve/openai_format.h"
#include "serve/web_assets.h"
#include "tensor/error.h"
#include "test_util.h"

using namespace iris::serve;
namespace fs = std::filesystem;

namespace {

// Expects parse_chat_request to refuse the body with this status and a message containing `hint`.
void expect_refused(const std::string& body, const std::string& hint, int status = 400) {
  try {
    parse_chat_request(body);
    ADD_FAILURE() << "accepted: " << body;
  } catch (const HttpError& e) {
    EXPECT_EQ(e.status(), status) << body;
    EXPECT_NE(std::string(e.what()).find(hint), std::string::npos)
        << "wanted '" << hint << "' in: " << e.what();
  }
}

}  // namespace

TEST(ChatRequest, ParsesMessagesPartsAndSampling) {
  ChatRequest r = parse_chat_request(R"({
    "model": "m", "stream": true, "stream_options": {"include_usage": true},
    "temperature": 0.5, "top_p": 0.9, "max_tokens": 7, "seed": 11, "stop": ["a", "bc"],
    "messages": [
      {"role": "developer", "content": "be nice"},
      {"role": "user", "content": [
        {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA", "detail": "low"}},
        {"type": "text", "text": "one"}, {"type": "image_url", "image_url": "data:image/jpeg;base64,BBBB"},
        {"type": "text", "text": "two"}]},
      {"role": "assistant", "content": "ok", "name": "bot"}
    ], "user": "u1", "n": 1, "presence_penalty": 0, "logit_bias": {}, "tools": null})");
  EXPECT_EQ(r.model, "m");
  EXPECT_TRUE(r.stream);
  EXPECT_TRUE(r.include_usage);
  EXPECT_FLOAT_EQ(r.sampling.temperature, 0.5f);
  EXPECT_FLOAT_EQ(r.sampling.top_p, 0.9f);
  EXPECT_EQ(r.max_tokens.value(), 7);
  EXPECT_TRUE(r.seed_given);
  EXPECT_EQ(r.sampling.seed, 11u);
  EXPECT_EQ(r.stop, (std::vector<std::string>{"a", "bc"}));
  ASSERT_EQ(r.messages.size(), 3u);
  EXPECT_EQ(r.messages[0].role, "system");
  EXPECT_EQ(r.messages[1].text, "one\ntwo");  // text parts joined with a newline, images placed before
  ASSERT_EQ(r.messages[1].images.size(), 2u);
  EXPECT_EQ(r.messages[1].images[1].url, "data:image/jpeg;base64,BBBB");
  EXPECT_EQ(r.messages[1].images[1].param, "messages[1].content[2].image_url");
  EXPECT_EQ(r.n_images(), 2u);
}

TEST(ChatRequest, DefaultsAndNewerNames) {
  iris::text::SamplingParams d;
  d.temperature = 0.7f;
  d.top_k = 40;
  ChatRequest r = parse_chat_request(
      R"({"messages": [{"role": "user", "content": "hi"}], "max_tokens": 5, "max_completion_tokens": 9})", {},
      d);
  EXPECT_FLOAT_EQ(r.sampling.temperature, 0.7f);  // server defaults where the request is silent
  EXPECT_EQ(r.sampling.top_k, 40);
  EXPECT_EQ(r.max_tokens.value(), 9);  // max_completion_tokens wins
  EXPECT_FALSE(r.seed_given);
  EXPECT_FALSE(r.stream);
  // null means "not given"; top_p 0 means greedy; integral floats are integers
  r = parse_chat_request(
      R"({"messages": [{"role": "user", "content": "hi"}], "temperature": null, "top_p": 0, "max_tokens": 16.0})");
  EXPECT_FLOAT_EQ(r.sampling.temperature, 0.0f);
  EXPECT_FLOAT_EQ(r.sampling.top_p, 1.0f);
  EXPECT_EQ(r.max_tokens.value(), 16);
}

TEST(ChatRequest, RefusesMalformedInput) {
  expect_refused("", "could not parse the JSON");
  expect_refused("{", "could not parse the JSON");
  expect_refused("[1]", "must be a JSON object");
  expect_refused("{}", "Missing required parameter: 'messages'");
  expect_refused(R"({"messages": []})", "empty array");
  expect_refused(R"({"messages": "hi"})", "expected an array");
  expect_refused(R"({"messages": [{"content": "x"}]})", "messages[0].role");
  expect_refused(R"({"messages": [{"role": "robot", "content": "x"}]})", "'robot'");
  expect_refused(R"({"messages": [{"role": "tool", "content": "x"}]})", "no tool calls");
  expect_refused(R"({"messages": [{"role": "user"}]})", "messages[0].content");
  expect_refused(R"({"messages": [{"role": "user", "content": 3}]})", "a string or an array");
  expect_refused(R"({"messages": [{"role": "user", "content": [{"type": "video"}]}]})", "'video'");
  expect_refused(R"({"messages": [{"role": "user", "content": [{"type": "text", "text": 1}]}]})",
                 "expected a string");
  expect_refused(R"({"messages": [{"role": "user", "content": "<image> hi"}]})", "<image>");
  expect_refused(
      R"({"messages": [{"role": "system", "content": [{"type": "image_url", "image_url": {"url": "x"}}]}]})",
      "only allowed in user messages");
  const std::string ok = R"("messages": [{"role": "user", "content": "hi"}])";
  expect_refused("{" + ok + R"(, "temperature": "hot"})", "expected a number");
  expect_refused("{" + ok + R"(, "temperature": 2.5})", "not in [0");
  expect_refused("{" + ok + R"(, "max_tokens": 0})", "max_tokens");
  expect_refused("{" + ok + R"(, "max_tokens": 2.5})", "expected an integer");
  expect_refused("{" + ok + R"(, "max_tokens": true})", "expected an integer");
  expect_refused("{" + ok + R"(, "seed": 1e300})", "seed");
  expect_refused("{" + ok + R"(, "stop": ["a","b","c","d","e"]})", "at most 4");
  expect_refused("{" + ok + R"(, "stop": ""})", "may not be empty");
  expect_refused("{" + ok + R"(, "n": 2})", "not supported");
  expect_refused("{" + ok + R"(, "logprobs": true})", "not supported");
  expect_refused("{" + ok + R"(, "stream_options": {"include_usage": true}})", "only allowed when 'stream'");
  expect_refused("{" + ok + R"(, "frobnicate": 1})", "Unrecognized request argument supplied: frobnicate");
  ChatLimits lim;
  lim.max_images = 1;
  try {
    parse_chat_request(
        R"({"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "a"}},
                          {"type": "image_url", "image_url": {"url": "b"}}]}]})",
        lim);
    ADD_FAILURE();
  } catch (const HttpError& e) {
    EXPECT_NE(std::string(e.what()).find("Too many images"), std::string::npos);
  }
}

TEST(Base64, RoundTripAndErrors) {
  for (std::string s : std::vector<std::string>{"", "f", "fo", "foo", "foob", "fooba", "foobar",
                                                std::string("\0\xff\x10", 3)})
    EXPECT_EQ(base64_decode(base64_encode(s)), s);
  EXPECT_EQ(base64_encode("foobar"), "Zm9vYmFy");
  EXPECT_EQ(base64_decode("Zm9v\r\nYmE="), "fooba");  // MIME line breaks
  EXPECT_EQ(base64_decode("Zm9vYmE"), "fooba");       // padding optional
  EXPECT_THROW(base64_decode("Zm9v*mFy"), iris::Error);
  EXPECT_THROW(base64_decode("Zm9vY"), iris::Error);  // ends mid-byte
  EXPECT_THROW(base64_decode("Zg==Zg=="), iris::Error);
  EXPECT_THROW(base64_decode(std::string(4000, 'A'), 100), iris::Error);  // over the limit, refused up front
}

TEST(Images, DataUrls) {
  ImageSourceOptions o;
  EXPECT_EQ(load_image_url("data:image/png;base64,Zm9v", "p", o), "foo");
  EXPECT_EQ(load_image_url("DATA:image/JPEG;charset=x;BASE64,Zm9v", "p", o), "foo");
  auto status = [&](const std::string& url) {
    try {
      load_image_url(url, "p", o);
    } catch (const HttpError& e) {
      EXPECT_EQ(e.param(), "p");
      return e.status();
    }
    return 200;
  };
  EXPECT_EQ(status("data:text/plain;base64,Zm9v"), 400);
  EXPECT_EQ(status("data:image/png,foo"), 400);
  EXPECT_EQ(status("data:image/png;base64"), 400);
  EXPECT_EQ(status("data:image/png;base64,@@"), 400);
  EXPECT_EQ(status("https://example.com/a.png"), 400);
  EXPECT_EQ(status("gopher://x/a.png"), 400);
  EXPECT_EQ(status("/etc/hostname"), 400);  // no --allow-local-images
  o.max_image_bytes = 2;
  EXPECT_EQ(status("data:image/png;base64,Zm9v"), 413);
}

TEST(Images, LocalFilesStayInsideTheAllowedFolder) {
  fs::path root = fs::path(iris::test::temp_dir()) / "serve-local";
  fs::create_directories(root / "inside");
  std::ofstream(root / "inside" / "a.png") << "AAA";
  std::ofstream(root / "secret.txt") << "SECRET";
  std::error_code ec;
  fs::create_symlink(root / "secret.txt", root / "inside" / "link.png", ec);
  ImageSourceOptions o;
  o.allow_local_dir = (root / "inside").string();
  EXPECT_EQ(load_image_url("a.png", "p", o), "AAA");
  EXPECT_EQ(load_image_url((root / "inside" / "a.png").string(), "p", o), "AAA");
  EXPECT_EQ(load_image_url("file://" + (root / "inside" / "a.png").string(), "p", o), "AAA");
  EXPECT_EQ(load_image_url("file://localhost" + (root / "inside" / "%61.png").string(), "p", o), "AAA");
  for (const std::string& bad :
       std::vector<std::string>{"../secret.txt", (root / "secret.txt").string(), "link.png", "missing.png",
                                ".", "file://" + (root / "secret.txt").string(), "file:relative.png"})
    EXPECT_THROW(load_image_url(bad, "p", o), HttpError) << bad;
}

TEST(OpenAiFormat, ShapesAndIds) {
  CompletionMeta m{new_completion_id(), 123, "tiny"};
  EXPECT_EQ(m.id.rfind("chatcmpl-", 0), 0u);
  EXPECT_EQ(m.id.size(), 9u + 24u);
  EXPECT_NE(new_completion_id(), m.id);
  auto c = completion_json(m, "hi", "stop", {3, 2});
  EXPECT_EQ(dump_json(c).rfind(R"({"id":")", 0), 0u);  // OpenAI's key order
  EXPECT_EQ(c["object"], "chat.completion");
  EXPECT_EQ(c["choices"][0]["message"]["content"], "hi");
  EXPECT_EQ(c["usage"]["total_tokens"], 5);
  auto k = chunk_json(m, {{"content", "x"}}, "", true);
  EXPECT_EQ(k["object"], "chat.completion.chunk");
  EXPECT_TRUE(k["choices"][0]["finish_reason"].is_null());
  EXPECT_TRUE(k["usage"].is_null());
  EXPECT_EQ(sse_event(k).rfind("data: {", 0), 0u);
  EXPECT_EQ(sse_event(k).substr(sse_event(k).size() - 2), "\n\n");
  EXPECT_TRUE(usage_chunk_json(m, {1, 1})["choices"].empty());
  EXPECT_EQ(openai_finish_reason("time_limit"), "length");
  // Invalid UTF-8 from a model never throws: it becomes U+FFFD.
  EXPECT_NO_THROW(dump_json(completion_json(m, std::string("\xff\xfe"), "stop", {})));
  auto e = error_body(HttpError(413, "big", "", "request_too_large"));
  EXPECT_EQ(e["error"]["type"], "invalid_request_error");
  EXPECT_TRUE(e["error"]["param"].is_null());
  EXPECT_EQ(e["error"]["code"], "request_too_large");
}

TEST(NetUtil, ConstantTimeEqual) {
  EXPECT_TRUE(constant_time_equal("secret", "secret"));
  EXPECT_FALSE(constant_time_equal("secret", "secreT"));
  EXPECT_FALSE(constant_time_equal("secret", "secret2"));
  EXPECT_FALSE(constant_time_equal("secret", "secre"));
  EXPECT_FALSE(constant_time_equal("secret", ""));
  EXPECT_TRUE(constant_time_equal("", ""));
  EXPECT_FALSE(peer_closed(-1));
}

TEST(WebAssets, EmbeddedPage) {
  const WebAsset* page = find_web_asset("/");
  ASSERT_NE(page, nullptr);
  EXPECT_NE(page->body.find("<!doctype html>"), std::string_view::npos);
  EXPECT_EQ(page->content_type.substr(0, 9), "text/html");
  ASSERT_NE(find_web_asset("/app.js"), nullptr);
  ASSERT_NE(find_web_asset("/style.css"), nullptr);
  EXPECT_EQ(find_web_asset("/secret"), nullptr);
}
