// Real chat templates as Hugging Face ships them (the Jinja source after JSON decoding), rendered with
// multi-turn conversations, system messages, images in content lists and add_generation_prompt on and off.
// Every expected string was traced by hand from the template's logic.
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include "test_util.h"
#include "text/jinja.h"

namespace iris::text {
namespace {

using ojson = nlohmann::ordered_json;

// llava-hf/llava-1.5-7b-hf, chat_template.json.
const char* kLlava15 =
    "{% for message in messages %}{% if message['role'] != 'system' %}{{ message['role'].upper() + ': '}}{% "
    "endif %}"
    "{# Render all images first #}{% for content in message['content'] | selectattr('type', 'equalto', "
    "'image') %}"
    "{{ '<image>\\n' }}{% endfor %}{# Render all text next #}{% if message['role'] != 'assistant' %}"
    "{% for content in message['content'] | selectattr('type', 'equalto', 'text') %}{{ content['text'] + ' "
    "'}}"
    "{% endfor %}{% else %}{% for content in message['content'] | selectattr('type', 'equalto', 'text') %}"
    "{% generation %}{{ content['text'] + ' '}}{% endgeneration %}{% endfor %}{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}{{ 'ASSISTANT:' }}{% endif %}";

// llava-hf/llava-v1.6-mistral-7b-hf, chat_template.json (current revision, with '</s> ').
const char* kLlavaNextMistral =
    "{% for message in messages %}{% if message['role'] == 'system' %}{{ '<<SYS>>\\n' + "
    "message['content'][0]['text'] "
    "+ '\\n<</SYS>>\\n\\n' }}{% elif message['role'] == 'user' %}{{ '[INST] ' }}{# Render all images first #}"
    "{% for content in message['content'] | selectattr('type', 'equalto', 'image') %}{{ '<image>\\n' }}{% "
    "endfor %}"
    "{# Render all text next #}{% for content in message['content'] | selectattr('type', 'equalto', 'text') "
    "%}"
    "{{ content['text'] }}{% endfor %}{{' [/INST]' }}{% elif message['role'] == 'assistant' %}"
    "{{ ' ' + message['content'][0]['text'] + '</s> '}}{% else %}"
    "{{ raise_exception('Only user and assistant roles are supported!') }}{% endif %}{% endfor %}";

// meta-llama/Meta-Llama-3-8B-Instruct, tokenizer_config.json.
const char* kLlama3 =
    "{% set loop_messages = messages %}{% for message in loop_messages %}{% set content = "
    "'<|start_header_id|>' + "
    "message['role'] + '<|end_header_id|>\n\n'+ message['content'] | trim + '<|eot_id|>' %}{% if loop.index0 "
    "== 0 %}"
    "{% set content = bos_token + content %}{% endif %}{{ content }}{% endfor %}{% if add_generation_prompt "
    "%}"
    "{{ '<|start_header_id|>assistant<|end_header_id|>\n\n' }}{% endif %}";

// Qwen/Qwen2-VL-7B-Instruct, chat_template.json.
const char* kQwen2VL =
    "{% set image_count = namespace(value=0) %}{% set video_count = namespace(value=0) %}{% for message in "
    "messages %}"
    "{% if loop.first and message['role'] != 'system' %}<|im_start|>system\nYou are a helpful "
    "assistant.<|im_end|>\n"
    "{% endif %}<|im_start|>{{ message['role'] }}\n{% if message['content'] is string %}{{ "
    "message['content'] }}"
    "<|im_end|>\n{% else %}{% for content in message['content'] %}{% if content['type'] == 'image' or "
    "'image' in "
    "content or 'image_url' in content %}{% set image_count.value = image_count.value + 1 %}{% if "
    "add_vision_id %}"
    "Picture {{ image_count.value }}: {% endif %}<|vision_start|><|image_pad|><|vision_end|>{% elif "
    "content['type'] "
    "== 'video' or 'video' in content %}{% set video_count.value = video_count.value + 1 %}{% if "
    "add_vision_id %}"
    "Video {{ video_count.value }}: {% endif %}<|vision_start|><|video_pad|><|vision_end|>{% elif 'text' in "
    "content "
    "%}{{ content['text'] }}{% endif %}{% endfor %}<|im_end|>\n{% endif %}{% endfor %}{% if "
    "add_generation_prompt %}"
    "<|im_start|>assistant\n{% endif %}";

// mistralai/Mistral-7B-Instruct-v0.1, tokenizer_config.json.
const char* kMistralV01 =
    "{{ bos_token }}{% for message in messages %}{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) "
    "%}"
    "{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}{% endif %}"
    "{% if message['role'] == 'user' %}{{ '[INST] ' + message['content'] + ' [/INST]' }}{% elif "
    "message['role'] == "
    "'assistant' %}{{ message['content'] + eos_token + ' ' }}{% else %}{{ raise_exception('Only user and "
    "assistant "
    "roles are supported!') }}{% endif %}{% endfor %}";

// meta-llama/Llama-2-7b-chat-hf, tokenizer_config.json (the tokenizer family of Vicuna / LLaVA-1.5's LLM).
const char* kLlama2Chat =
    "{% if messages[0]['role'] == 'system' %}{% set loop_messages = messages[1:] %}{% set system_message = "
    "messages[0]['content'] %}{% else %}{% set loop_messages = messages %}{% set system_message = false %}{% "
    "endif %}"
    "{% for message in loop_messages %}{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}"
    "{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}{% endif %}"
    "{% if loop.index0 == 0 and system_message != false %}{% set content = '<<SYS>>\\n' + system_message + "
    "'\\n<</SYS>>\\n\\n' + message['content'] %}{% else %}{% set content = message['content'] %}{% endif %}"
    "{% if message['role'] == 'user' %}{{ bos_token + '[INST] ' + content.strip() + ' [/INST]' }}"
    "{% elif message['role'] == 'assistant' %}{{ ' '  + content.strip() + ' ' + eos_token }}{% endif %}{% "
    "endfor %}";

// microsoft/Phi-3-mini-4k-instruct, tokenizer_config.json.
const char* kPhi3 =
    "{% for message in messages %}{% if message['role'] == 'system' %}{{'<|system|>\\n' + message['content'] "
    "+ "
    "'<|end|>\\n'}}{% elif message['role'] == 'user' %}{{'<|user|>\\n' + message['content'] + '<|end|>\\n'}}"
    "{% elif message['role'] == 'assistant' %}{{'<|assistant|>\\n' + message['content'] + '<|end|>\\n'}}{% "
    "endif %}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|assistant|>\\n' }}{% else %}{{ eos_token }}{% endif %}";

// google/gemma-3-4b-it, tokenizer_config.json / chat_template.json: indented, every tag with `-` whitespace
// control.
const char* kGemma3 = R"JINJA({{ bos_token }}
{%- if messages[0]['role'] == 'system' -%}
    {%- if messages[0]['content'] is string -%}
        {%- set first_user_prefix = messages[0]['content'] + '\n\n' -%}
    {%- else -%}
        {%- set first_user_prefix = messages[0]['content'][0]['text'] + '\n\n' -%}
    {%- endif -%}
    {%- set loop_messages = messages[1:] -%}
{%- else -%}
    {%- set first_user_prefix = "" -%}
    {%- set loop_messages = messages -%}
{%- endif -%}
{%- for message in loop_messages -%}
    {%- if (message['role'] == 'user') != (loop.index0 % 2 == 0) -%}
        {{ raise_exception("Conversation roles must alternate user/assistant/user/assistant/...") }}
    {%- endif -%}
    {%- if (message['role'] == 'assistant') -%}
        {%- set role = "model" -%}
    {%- else -%}
        {%- set role = message['role'] -%}
    {%- endif -%}
    {{ '<start_of_turn>' + role + '\n' + (first_user_prefix if loop.first else "") }}
    {%- if message['content'] is string -%}
        {{ message['content'] | trim }}
    {%- elif message['content'] is iterable -%}
        {%- for item in message['content'] -%}
            {%- if item['type'] == 'image' -%}
                {{ '<start_of_image>' }}
            {%- elif item['type'] == 'text' -%}
                {{ item['text'] | trim }}
            {%- endif -%}
        {%- endfor -%}
    {%- else -%}
        {{ raise_exception("Invalid content type") }}
    {%- endif -%}
    {{ '<end_of_turn>\n' }}
{%- endfor -%}
{%- if add_generation_prompt -%}
    {{'<start_of_turn>model\n'}}
{%- endif -%}
)JINJA";

std::string render(const char* tmpl, const char* messages_json, bool add_generation_prompt,
                   const std::string& bos = "", const std::string& eos = "",
                   const char* extra_json = nullptr) {
  ChatTemplate t(tmpl);
  return t.render_messages(ojson::parse(messages_json), add_generation_prompt, bos, eos,
                           extra_json ? ojson::parse(extra_json) : ojson(nullptr));
}

// ---- LLaVA-1.5 ----

const char* kLlavaConversation = R"([
  {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "What is shown in this image?"}]},
  {"role": "assistant", "content": [{"type": "text", "text": "A cat."}]},
  {"role": "user", "content": [{"type": "text", "text": "What color is it?"}]}
])";

TEST(JinjaTemplates, Llava15MultiTurnWithImage) {
  EXPECT_EQ(
      render(kLlava15, kLlavaConversation, true),
      "USER: <image>\nWhat is shown in this image? ASSISTANT: A cat. USER: What color is it? ASSISTANT:");
  EXPECT_EQ(render(kLlava15, kLlavaConversation, false),
            "USER: <image>\nWhat is shown in this image? ASSISTANT: A cat. USER: What color is it? ");
}

TEST(JinjaTemplates, Llava15SystemAndTwoImages) {
  const char* msgs = R"([
    {"role": "system", "content": [{"type": "text", "text": "Be brief."}]},
    {"role": "user", "content": [{"type": "text", "text": "Compare these."}, {"type": "image"}, {"type": "image"}]}
  ])";
  // Images are rendered before the text whatever their order in the list; the system turn has no role prefix.
  EXPECT_EQ(render(kLlava15, msgs, true), "Be brief. USER: <image>\n<image>\nCompare these. ASSISTANT:");
}

TEST(JinjaTemplates, Llava15GenerationSpansCoverAssistantText) {
  ChatTemplate t(kLlava15);
  ojson ctx = {{"messages", ojson::parse(kLlavaConversation)}, {"add_generation_prompt", true}};
  std::vector<std::pair<size_t, size_t>> spans;
  std::string out = t.render(ctx, &spans);
  ASSERT_EQ(spans.size(), 1u);
  EXPECT_EQ(out.substr(spans[0].first, spans[0].second - spans[0].first), "A cat. ");
}

// ---- LLaVA-NeXT (Mistral) ----

TEST(JinjaTemplates, LlavaNextMistral) {
  const char* msgs = R"([
    {"role": "system", "content": [{"type": "text", "text": "You are helpful."}]},
    {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "Describe."}]},
    {"role": "assistant", "content": [{"type": "text", "text": "A dog."}]},
    {"role": "user", "content": [{"type": "text", "text": "Breed?"}]}
  ])";
  EXPECT_EQ(render(kLlavaNextMistral, msgs, true),
            "<<SYS>>\nYou are helpful.\n<</SYS>>\n\n[INST] <image>\nDescribe. [/INST] A dog.</s> [INST] "
            "Breed? [/INST]");
}

TEST(JinjaTemplates, LlavaNextMistralRejectsOtherRoles) {
  const char* msgs = R"([{"role": "tool", "content": [{"type": "text", "text": "x"}]}])";
  try {
    render(kLlavaNextMistral, msgs, true);
    FAIL() << "expected TemplateRaised";
  } catch (const TemplateRaised& e) {
    EXPECT_STREQ(e.what(), "Only user and assistant roles are supported!");
  }
}

TEST(JinjaTemplates, LlavaNextOldRevisionEscapedBackslash) {
  // The first published revision wrote '<\\s> ' (a Jinja escape for one backslash), which renders as "<\s> ".
  std::string old_rev = kLlavaNextMistral;
  old_rev.replace(old_rev.find("'</s> '"), 7, "'<\\\\s> '");
  const char* msgs = R"([{"role": "user", "content": [{"type": "text", "text": "Hi"}]},
                         {"role": "assistant", "content": [{"type": "text", "text": "Hello"}]}])";
  EXPECT_EQ(render(old_rev.c_str(), msgs, false), "[INST] Hi [/INST] Hello<\\s> ");
}

// ---- Llama 3 ----

const char* kPirateChat = R"([
  {"role": "system", "content": "You are a pirate."},
  {"role": "user", "content": "  Hi there!\n"},
  {"role": "assistant", "content": "Arr!"},
  {"role": "user", "content": "Where is the treasure?"}
])";

const char* kLlama3Expected =
    "<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\nYou are a pirate.<|eot_id|>"
    "<|start_header_id|>user<|end_header_id|>\n\nHi there!<|eot_id|>"
    "<|start_header_id|>assistant<|end_header_id|>\n\nArr!<|eot_id|>"
    "<|start_header_id|>user<|end_header_id|>\n\nWhere is the treasure?<|eot_id|>";

TEST(JinjaTemplates, Llama3Instruct) {
  // `'...' + message['content'] | trim + '...'`: the filter binds tighter than +, so only the content is
  // trimmed.
  EXPECT_EQ(render(kLlama3, kPirateChat, true, "<|begin_of_text|>"),
            std::string(kLlama3Expected) + "<|start_header_id|>assistant<|end_header_id|>\n\n");
  EXPECT_EQ(render(kLlama3, kPirateChat, false, "<|begin_of_text|>"), kLlama3Expected);
}

TEST(JinjaTemplates, Llama3FromSharedTokenizerConfig) {
  auto cfg =
      nlohmann::json::parse(test::read_file(test::shared_dir() + "/tokenizers/llama3/tokenizer_config.json"));
  std::string source = chat_template_from_config(cfg);
  EXPECT_EQ(source, kLlama3);
  EXPECT_EQ(read_chat_template(test::shared_dir() + "/tokenizers/llama3"), source);
  ChatTemplate t(source);
  EXPECT_EQ(t.render_messages(ojson::parse(kPirateChat), false, cfg["bos_token"].get<std::string>()),
            kLlama3Expected);
}

// ---- Qwen2-VL ----

TEST(JinjaTemplates, Qwen2VLDefaultSystemAndImage) {
  const char* msgs =
      R"([{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "Describe this image."}]}])";
  EXPECT_EQ(render(kQwen2VL, msgs, true),
            "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n"
            "<|im_start|>user\n<|vision_start|><|image_pad|><|vision_end|>Describe this image.<|im_end|>\n"
            "<|im_start|>assistant\n");
}

TEST(JinjaTemplates, Qwen2VLSystemVisionIdsAndStringTurns) {
  const char* msgs = R"([
    {"role": "system", "content": "You are a vision expert."},
    {"role": "user", "content": [
      {"type": "image"},
      {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}},
      {"type": "video"},
      {"type": "text", "text": "Compare."}]},
    {"role": "assistant", "content": "They differ."},
    {"role": "user", "content": "How?"}
  ])";
  EXPECT_EQ(render(kQwen2VL, msgs, false, "", "", R"({"add_vision_id": true})"),
            "<|im_start|>system\nYou are a vision expert.<|im_end|>\n"
            "<|im_start|>user\nPicture 1: <|vision_start|><|image_pad|><|vision_end|>"
            "Picture 2: <|vision_start|><|image_pad|><|vision_end|>"
            "Video 1: <|vision_start|><|video_pad|><|vision_end|>Compare.<|im_end|>\n"
            "<|im_start|>assistant\nThey differ.<|im_end|>\n"
            "<|im_start|>user\nHow?<|im_end|>\n");
}

// ---- Mistral v0.1 ----

TEST(JinjaTemplates, MistralInstructV01) {
  const char* msgs = R"([
    {"role": "user", "content": "Hello, how are you?"},
    {"role": "assistant", "content": "I'm doing great. How can I help you today?"},
    {"role": "user", "content": "I'd like to show off how chat templating works!"}
  ])";
  EXPECT_EQ(render(kMistralV01, msgs, false, "<s>", "</s>"),
            "<s>[INST] Hello, how are you? [/INST]I'm doing great. How can I help you today?</s> "
            "[INST] I'd like to show off how chat templating works! [/INST]");
}

TEST(JinjaTemplates, MistralInstructV01RoleAlternation) {
  auto expect_raise = [](const char* msgs) {
    try {
      render(kMistralV01, msgs, false, "<s>", "</s>");
      ADD_FAILURE() << "expected TemplateRaised for " << msgs;
    } catch (const TemplateRaised& e) {
      EXPECT_STREQ(e.what(), "Conversation roles must alternate user/assistant/user/assistant/...");
    }
  };
  expect_raise(R"([{"role": "user", "content": "a"}, {"role": "user", "content": "b"}])");
  // A system turn first breaks the alternation check before the role check is reached.
  expect_raise(R"([{"role": "system", "content": "s"}, {"role": "user", "content": "b"}])");
}

// ---- Llama 2 chat ----

TEST(JinjaTemplates, Llama2ChatWithSystem) {
  const char* msgs = R"([
    {"role": "system", "content": "Be concise."},
    {"role": "user", "content": " Hi "},
    {"role": "assistant", "content": "Hello! "},
    {"role": "user", "content": "Bye"}
  ])";
  EXPECT_EQ(render(kLlama2Chat, msgs, false, "<s>", "</s>"),
            "<s>[INST] <<SYS>>\nBe concise.\n<</SYS>>\n\n Hi [/INST] Hello! </s><s>[INST] Bye [/INST]");
}

TEST(JinjaTemplates, Llama2ChatWithoutSystem) {
  const char* msgs = R"([{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Yo"}])";
  EXPECT_EQ(render(kLlama2Chat, msgs, false, "<s>", "</s>"), "<s>[INST] Hi [/INST] Yo </s>");
}

// ---- Phi-3 ----

TEST(JinjaTemplates, Phi3Mini) {
  const char* msgs = R"([
    {"role": "system", "content": "You are terse."},
    {"role": "user", "content": "Hello!"},
    {"role": "assistant", "content": "Hi."},
    {"role": "user", "content": "What is 2+2?"}
  ])";
  const std::string body =
      "<|system|>\nYou are terse.<|end|>\n<|user|>\nHello!<|end|>\n<|assistant|>\nHi.<|end|>\n"
      "<|user|>\nWhat is 2+2?<|end|>\n";
  EXPECT_EQ(render(kPhi3, msgs, true, "<s>", "<|endoftext|>"), body + "<|assistant|>\n");
  EXPECT_EQ(render(kPhi3, msgs, false, "<s>", "<|endoftext|>"), body + "<|endoftext|>");
}

// ---- Gemma 3 ----

TEST(JinjaTemplates, Gemma3SystemFoldedIntoFirstUserTurnWithImage) {
  const char* msgs = R"([
    {"role": "system", "content": "You are terse."},
    {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": " Describe. "}]},
    {"role": "assistant", "content": "A cat.\n"},
    {"role": "user", "content": "Color?"}
  ])";
  EXPECT_EQ(render(kGemma3, msgs, true, "<bos>"),
            "<bos><start_of_turn>user\nYou are terse.\n\n<start_of_image>Describe.<end_of_turn>\n"
            "<start_of_turn>model\nA cat.<end_of_turn>\n<start_of_turn>user\nColor?<end_of_turn>\n"
            "<start_of_turn>model\n");
  const char* list_system = R"([
    {"role": "system", "content": [{"type": "text", "text": "Sys."}]},
    {"role": "user", "content": "Hi"}
  ])";
  EXPECT_EQ(render(kGemma3, list_system, false, "<bos>"),
            "<bos><start_of_turn>user\nSys.\n\nHi<end_of_turn>\n");
}

TEST(JinjaTemplates, Gemma3RejectsBadContent) {
  try {
    render(kGemma3, R"([{"role": "user", "content": 42}])", true, "<bos>");
    FAIL() << "expected TemplateRaised";
  } catch (const TemplateRaised& e) {
    EXPECT_STREQ(e.what(), "Invalid content type");
  }
}

// ---- Qwen3 (the shared tokenizer's template: whitespace control, namespace, reversed loop, tools, tojson)
// ----

std::string qwen3_template() {
  auto cfg =
      nlohmann::json::parse(test::read_file(test::shared_dir() + "/tokenizers/qwen2/tokenizer_config.json"));
  return chat_template_from_config(cfg);
}

TEST(JinjaTemplates, Qwen3ThinkingHistoryStripped) {
  ChatTemplate t(qwen3_template());
  const char* msgs = R"([
    {"role": "system", "content": "You are Qwen."},
    {"role": "user", "content": "Hi"},
    {"role": "assistant", "content": "<think>\nplanning\n</think>\n\nHello!"},
    {"role": "user", "content": "2+2?"}
  ])";
  // The assistant turn precedes the last user query, so its reasoning is dropped.
  EXPECT_EQ(
      t.render_messages(ojson::parse(msgs), true),
      "<|im_start|>system\nYou are Qwen.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n"
      "<|im_start|>assistant\nHello!<|im_end|>\n<|im_start|>user\n2+2?<|im_end|>\n<|im_start|>assistant\n");
}

TEST(JinjaTemplates, Qwen3LastAssistantKeepsReasoning) {
  ChatTemplate t(qwen3_template());
  const char* msgs = R"([
    {"role": "user", "content": "Hi"},
    {"role": "assistant", "content": "Hello!", "reasoning_content": "\nbe nice\n"}
  ])";
  EXPECT_EQ(t.render_messages(ojson::parse(msgs), false),
            "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n<think>\nbe "
            "nice\n</think>\n\nHello!<|im_end|>\n");
}

TEST(JinjaTemplates, Qwen3ToolsAndToolCalls) {
  ChatTemplate t(qwen3_template());
  const char* msgs = R"([
    {"role": "user", "content": "Weather in Paris?"},
    {"role": "assistant", "content": "", "tool_calls": [
      {"type": "function", "function": {"name": "get_weather", "arguments": {"city": "Paris"}}}]},
    {"role": "tool", "content": "{\"temp\": 18}"}
  ])";
  const char* extra = R"({"enable_thinking": false, "tools": [{"type": "function", "function": {
      "name": "get_weather", "description": "Get weather",
      "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}]})";
  EXPECT_EQ(
      t.render_messages(ojson::parse(msgs), true, "", "", ojson::parse(extra)),
      "<|im_start|>system\n# Tools\n\nYou may call one or more functions to assist with the user query.\n\n"
      "You are provided with function signatures within <tools></tools> XML tags:\n<tools>\n"
      "{\"type\": \"function\", \"function\": {\"name\": \"get_weather\", \"description\": \"Get weather\", "
      "\"parameters\": {\"type\": \"object\", \"properties\": {\"city\": {\"type\": \"string\"}}, "
      "\"required\": [\"city\"]}}}\n</tools>\n\nFor each function call, return a json object with function "
      "name "
      "and arguments within <tool_call></tool_call> XML tags:\n<tool_call>\n{\"name\": <function-name>, "
      "\"arguments\": <args-json-object>}\n</tool_call><|im_end|>\n"
      "<|im_start|>user\nWeather in Paris?<|im_end|>\n"
      "<|im_start|>assistant\n<tool_call>\n{\"name\": \"get_weather\", \"arguments\": {\"city\": "
      "\"Paris\"}}\n"
      "</tool_call><|im_end|>\n"
      "<|im_start|>user\n<tool_response>\n{\"temp\": 18}\n</tool_response><|im_end|>\n"
      "<|im_start|>assistant\n<think>\n\n</think>\n\n");
}

TEST(JinjaTemplates, SharedMistralConfigHasNoTemplate) {
  EXPECT_EQ(read_chat_template(test::shared_dir() + "/tokenizers/mistral"), "");
  auto cfg = nlohmann::json::parse(
      test::read_file(test::shared_dir() + "/tokenizers/mistral/tokenizer_config.json"));
  EXPECT_THROW(chat_template_from_config(cfg), Error);
}

TEST(JinjaTemplates, NamedTemplateList) {
  nlohmann::json cfg = {
      {"chat_template",
       {{{"name", "default"}, {"template", "D"}}, {{"name", "tool_use"}, {"template", "T"}}}}};
  EXPECT_EQ(chat_template_from_config(cfg), "D");
  EXPECT_EQ(chat_template_from_config(cfg, "tool_use"), "T");
  try {
    chat_template_from_config(cfg, "rag");
    FAIL();
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("tool_use"), std::string::npos) << e.what();
  }
}

}  // namespace
}  // namespace iris::text
