// Conversation rendering shared by inference and training: LLaVA-1.5's format and chat-template messages.
#include "text/conversation.h"

#include "text/jinja.h"

namespace iris::text {

std::string render_llava15(const std::vector<ChatMessage>& messages, const std::string& eos_token,
                           bool add_generation_prompt, Spans* answer_spans) {
  if (answer_spans) answer_spans->clear();
  std::string out;
  for (const ChatMessage& m : messages) {
    if (m.role == "system") {
      out += m.text + " ";
      continue;
    }
    const bool assistant = m.role == "assistant";
    out += assistant ? "ASSISTANT:" : "USER:";
    const size_t begin = out.size();  // the generation prompt ends here: the answer starts with its space
    out += " ";
    for (int i = 0; i < m.n_images; ++i) out += "<image>\n";
    out += m.text;
    out += assistant ? eos_token : std::string(" ");
    if (assistant && answer_spans) answer_spans->emplace_back(begin, out.size());
  }
  if (add_generation_prompt) out += "ASSISTANT:";
  return out;
}

const std::string& llava15_chat_template() {
  // Images are gathered before the text whatever the order of the parts, as render_llava15 places them; any role
  // other than system and assistant is a user turn there too. The generation block starts right after
  // "ASSISTANT:", where the generation prompt ends.
  static const std::string tmpl =
      "{%- for message in messages -%}\n"
      "    {%- set ns = namespace(images='', text='') -%}\n"
      "    {%- if message['content'] is string -%}\n"
      "        {%- set ns.text = message['content'] -%}\n"
      "    {%- else -%}\n"
      "        {%- for part in message['content'] -%}\n"
      "            {%- if part['type'] == 'image' or part['type'] == 'image_url' -%}\n"
      "                {%- set ns.images = ns.images + '<image>\\n' -%}\n"
      "            {%- elif part['type'] == 'text' -%}\n"
      "                {%- set ns.text = ns.text + part['text'] -%}\n"
      "            {%- endif -%}\n"
      "        {%- endfor -%}\n"
      "    {%- endif -%}\n"
      "    {%- if message['role'] == 'system' -%}\n"
      "        {{- ns.text + ' ' -}}\n"
      "    {%- elif message['role'] == 'assistant' -%}\n"
      "        {{- 'ASSISTANT:' -}}\n"
      "        {%- generation -%}\n"
      "            {{- ' ' + ns.images + ns.text + eos_token -}}\n"
      "        {%- endgeneration -%}\n"
      "    {%- else -%}\n"
      "        {{- 'USER: ' + ns.images + ns.text + ' ' -}}\n"
      "    {%- endif -%}\n"
      "{%- endfor -%}\n"
      "{%- if add_generation_prompt -%}\n"
      "    {{- 'ASSISTANT:' -}}\n"
      "{%- endif -%}\n";
  return tmpl;
}

nlohmann::ordered_json chat_messages_json(const std::vector<ChatMessage>& messages) {
  nlohmann::ordered_json msgs = nlohmann::ordered_json::array();
  for (const ChatMessage& m : messages) {
    nlohmann::ordered_json content = nlohmann::ordered_json::array();
    for (int i = 0; i < m.n_images; ++i) content.push_back({{"type", "image"}});
    nlohmann::ordered_json part = nlohmann::ordered_json::object();
    part["text"] = m.text;
    part["type"] = "text";
    content.push_back(std::move(part));
    nlohmann::ordered_json msg = nlohmann::ordered_json::object();
    msg["content"] = std::move(content);
    msg["role"] = m.role;
    msgs.push_back(std::move(msg));
  }
  return msgs;
}

std::string render_chat(const ChatTemplate& tmpl, const std::vector<ChatMessage>& messages,
                        bool add_generation_prompt, const std::string& bos_token, const std::string& eos_token,
                        Spans* generation_spans) {
  // Keys in sorted order, as nlohmann::json (which runtime::Engine used) iterates them.
  nlohmann::ordered_json ctx = nlohmann::ordered_json::object();
  ctx["add_generation_prompt"] = add_generation_prompt;
  ctx["bos_token"] = bos_token;
  ctx["eos_token"] = eos_token;
  ctx["messages"] = chat_messages_json(messages);
  return tmpl.render(ctx, generation_spans);
}

}  // namespace iris::text
