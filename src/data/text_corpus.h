// Plain-text documents from the files iris trains on, for objectives that see text only: training a tokenizer
// (`iris data tokenizer`) and language-model pretraining. The format follows the file name: LLaVA conversation
// JSON, JSON lines, or plain text.
#pragma once
#include <string>
#include <vector>

namespace iris::data {

enum class TextFormat {
  Plain,      // any other name: paragraphs separated by blank lines
  Jsonl,      // *.jsonl: one JSON object per line
  LlavaJson,  // *.json: a JSON array of LLaVA conversations
};

// By extension (case-insensitive): .jsonl, .json, anything else is plain text (licence files have none).
TextFormat text_format_of(const std::string& path);

// The documents of one file, in file order; empty documents are left out.
// - Plain text: each paragraph (a run of lines that are not blank) is a document, its lines joined by "\n"
//   ("\r\n" line ends become "\n"; a leading UTF-8 byte-order mark is dropped).
// - JSONL: each non-blank line is an object; its string values (nested ones included, in file order) joined by
//   "\n" make one document. The values of "id", "image" and "images" are file names and keys, not text, and are
//   left out.
// - LLaVA JSON: one document per conversation: each turn's "value" with its "<image>" markers removed and
//   surrounding whitespace trimmed, the turns joined by "\n".
// Throws iris::Error for a missing or unreadable file and for malformed JSON or unexpected structure, naming the
// file and the line or entry.
std::vector<std::string> read_text_documents(const std::string& path);

}  // namespace iris::data
