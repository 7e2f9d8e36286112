// Metrics: VQAv2 normalisation and accuracy, coco-caption tokenisation, corpus BLEU, CIDEr-D, POPE.
#include "eval/metrics.h"

#include <algorithm>
#include <cctype>
#include <cmath>
#include <map>
#include <string>
#include <unordered_map>

namespace iris::eval {

namespace {

bool is_digit(char c) {
  return c >= '0' && c <= '9';
}
bool is_space(char c) {
  return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\v' || c == '\f';
}

std::string lower(std::string_view s) {
  std::string out(s);
  for (char& c : out)
    if (c >= 'A' && c <= 'Z') c = char(c - 'A' + 'a');
  return out;
}

std::string strip(const std::string& s) {
  size_t b = 0, e = s.size();
  while (b < e && is_space(s[b])) ++b;
  while (e > b && is_space(s[e - 1])) --e;
  return s.substr(b, e - b);
}

void replace_all(std::string& s, std::string_view from, std::string_view to) {
  if (from.empty()) return;
  std::string out;  // built anew: in-place replace trips GCC 12's -Wrestrict false positive
  size_t pos = 0, hit;
  while ((hit = s.find(from, pos)) != std::string::npos) {
    out.append(s, pos, hit - pos);
    out.append(to);
    pos = hit + from.size();
  }
  out.append(s, pos, std::string::npos);
  s = std::move(out);
}

std::vector<std::string> split_ws(const std::string& s) {
  std::vector<std::string> out;
  size_t i = 0;
  while (i < s.size()) {
    while (i < s.size() && is_space(s[i])) ++i;
    size_t j = i;
    while (j < s.size() && !is_space(s[j])) ++j;
    if (j > i) out.push_back(s.substr(i, j - i));
    i = j;
  }
  return out;
}

// The contractions table of the VQA evaluation (keys as the answers are written without apostrophes).
const std::unordered_map<std::string, std::string>& contractions() {
  static const std::unordered_map<std::string, std::string> m = {{"aint", "ain't"},
                                                                 {"arent", "aren't"},
                                                                 {"cant", "can't"},
                                                                 {"couldve", "could've"},
                                                                 {"couldnt", "couldn't"},
                                                                 {"couldn'tve", "couldn't've"},
                                                                 {"couldnt've", "couldn't've"},
                                                                 {"didnt", "didn't"},
                                                                 {"doesnt", "doesn't"},
                                                                 {"dont", "don't"},
                                                                 {"hadnt", "hadn't"},
                                                                 {"hadnt've", "hadn't've"},
                                                                 {"hadn'tve", "hadn't've"},
                                                                 {"hasnt", "hasn't"},
                                                                 {"havent", "haven't"},
                                                                 {"hed", "he'd"},
                                                                 {"hed've", "he'd've"},
                                                                 {"he'dve", "he'd've"},
                                                                 {"hes", "he's"},
                                                                 {"howd", "how'd"},
                                                                 {"howll", "how'll"},
                                                                 {"hows", "how's"},
                                                                 {"Id've", "I'd've"},
                                                                 {"I'dve", "I'd've"},
                                                                 {"Im", "I'm"},
                                                                 {"Ive", "I've"},
                                                                 {"isnt", "isn't"},
                                                                 {"itd", "it'd"},
                                                                 {"itd've", "it'd've"},
                                                                 {"it'dve", "it'd've"},
                                                                 {"itll", "it'll"},
                                                                 {"let's", "let's"},
                                                                 {"maam", "ma'am"},
                                                                 {"mightnt", "mightn't"},
                                                                 {"mightnt've", "mightn't've"},
                                                                 {"mightn'tve", "mightn't've"},
                                                                 {"mightve", "might've"},
                                                                 {"mustnt", "mustn't"},
                                                                 {"mustve", "must've"},
                                                                 {"neednt", "needn't"},
                                                                 {"notve", "not've"},
                                                                 {"oclock", "o'clock"},
                                                                 {"oughtnt", "oughtn't"},
                                                                 {"ow's'at", "'ow's'at"},
                                                                 {"'ows'at", "'ow's'at"},
                                                                 {"'ow'sat", "'ow's'at"},
                                                                 {"shant", "shan't"},
                                                                 {"shed've", "she'd've"},
                                                                 {"she'dve", "she'd've"},
                                                                 {"she's", "she's"},
                                                                 {"shouldve", "should've"},
                                                                 {"shouldnt", "shouldn't"},
                                                                 {"shouldnt've", "shouldn't've"},
                                                                 {"shouldn'tve", "shouldn't've"},
                                                                 {"somebody'd", "somebodyd"},
                                                                 {"somebodyd've", "somebody'd've"},
                                                                 {"somebody'dve", "somebody'd've"},
                                                                 {"somebodyll", "somebody'll"},
                                                                 {"somebodys", "somebody's"},
                                                                 {"someoned", "someone'd"},
                                                                 {"someoned've", "someone'd've"},
                                                                 {"someone'dve", "someone'd've"},
                                                                 {"someonell", "someone'll"},
                                                                 {"someones", "someone's"},
                                                                 {"somethingd", "something'd"},
                                                                 {"somethingd've", "something'd've"},
                                                                 {"something'dve", "something'd've"},
                                                                 {"somethingll", "something'll"},
                                                                 {"thats", "that's"},
                                                                 {"thered", "there'd"},
                                                                 {"thered've", "there'd've"},
                                                                 {"there'dve", "there'd've"},
                                                                 {"therere", "there're"},
                                                                 {"theres", "there's"},
                                                                 {"theyd", "they'd"},
                                                                 {"theyd've", "they'd've"},
                                                                 {"they'dve", "they'd've"},
                                                                 {"theyll", "they'll"},
                                                                 {"theyre", "they're"},
                                                                 {"theyve", "they've"},
                                                                 {"twas", "'twas"},
                                                                 {"wasnt", "wasn't"},
                                                                 {"wed've", "we'd've"},
                                                                 {"we'dve", "we'd've"},
                                                                 {"weve", "we've"},
                                                                 {"werent", "weren't"},
                                                                 {"whatll", "what'll"},
                                                                 {"whatre", "what're"},
                                                                 {"whats", "what's"},
                                                                 {"whatve", "what've"},
                                                                 {"whens", "when's"},
                                                                 {"whered", "where'd"},
                                                                 {"wheres", "where's"},
                                                                 {"whereve", "where've"},
                                                                 {"whod", "who'd"},
                                                                 {"whod've", "who'd've"},
                                                                 {"who'dve", "who'd've"},
                                                                 {"wholl", "who'll"},
                                                                 {"whos", "who's"},
                                                                 {"whove", "who've"},
                                                                 {"whyll", "why'll"},
                                                                 {"whyre", "why're"},
                                                                 {"whys", "why's"},
                                                                 {"wont", "won't"},
                                                                 {"wouldve", "would've"},
                                                                 {"wouldnt", "wouldn't"},
                                                                 {"wouldnt've", "wouldn't've"},
                                                                 {"wouldn'tve", "wouldn't've"},
                                                                 {"yall", "y'all"},
                                                                 {"yall'll", "y'all'll"},
                                                                 {"y'allll", "y'all'll"},
                                                                 {"yall'd've", "y'all'd've"},
                                                                 {"y'alld've", "y'all'd've"},
                                                                 {"y'all'dve", "y'all'd've"},
                                                                 {"youd", "you'd"},
                                                                 {"youd've", "you'd've"},
                                                                 {"you'dve", "you'd've"},
                                                                 {"youll", "you'll"},
                                                                 {"youre", "you're"},
                                                                 {"youve", "you've"}};
  return m;
}

// Punctuation handled one mark at a time, in the reference order.
constexpr std::string_view kPunct[] = {";",  "/", "[", "]", "\"", "{", "}", "(", ")", "=", "+",
                                       "\\", "_", "-", ">", "<",  "@", "`", ",", "?", "!"};

bool has_digit_comma_digit(const std::string& s) {  // the reference's comma-strip search: \d,+\d
  for (size_t i = 0; i + 2 < s.size(); ++i) {
    if (!is_digit(s[i]) || s[i + 1] != ',') continue;
    size_t j = i + 1;
    while (j < s.size() && s[j] == ',') ++j;
    if (j < s.size() && is_digit(s[j])) return true;
  }
  return false;
}

std::string process_punctuation(const std::string& in) {
  std::string out = in;
  const bool comma_number = has_digit_comma_digit(in);
  for (std::string_view p : kPunct) {
    // Decided on the input text, applied to the running output, as the reference does.
    bool touches_space = false;  // "p " or " p" in the input (p is one character)
    for (size_t i = 0; i < in.size() && !touches_space; ++i)
      touches_space =
          in[i] == p[0] && ((i + 1 < in.size() && in[i + 1] == ' ') || (i > 0 && in[i - 1] == ' '));
    replace_all(out, p, touches_space || comma_number ? "" : " ");
  }
  // Periods not followed by a digit are removed. The reference passes re.UNICODE (32) where re.sub takes its
  // count, so at most 32 periods go.
  std::string res;
  int removed = 0;
  for (size_t i = 0; i < out.size(); ++i) {
    if (out[i] == '.' && removed < 32 && !(i + 1 < out.size() && is_digit(out[i + 1]))) {
      ++removed;
      continue;
    }
    res += out[i];
  }
  return res;
}

std::string process_digit_article(const std::string& in) {
  static const std::map<std::string, std::string> numbers = {
      {"none", "0"}, {"zero", "0"}, {"one", "1"},   {"two", "2"},   {"three", "3"}, {"four", "4"},
      {"five", "5"}, {"six", "6"},  {"seven", "7"}, {"eight", "8"}, {"nine", "9"},  {"ten", "10"}};
  std::vector<std::string> words;
  for (std::string w : split_ws(lower(in))) {
    if (auto it = numbers.find(w); it != numbers.end()) w = it->second;
    if (w == "a" || w == "an" || w == "the") continue;
    words.push_back(w);
  }
  std::string out;
  for (size_t i = 0; i < words.size(); ++i) {
    if (auto it = contractions().find(words[i]); it != contractions().end()) words[i] = it->second;
    out += (i ? " " : "") + words[i];
  }
  return out;
}

using NgramCounts = std::map<std::string, int>;  // n-gram (tokens joined by ' ') -> count

// Counts of all n-grams, n = 1..4, of a tokenised sentence; `len` receives the token count.
NgramCounts ngrams(const std::string& sentence, int* len = nullptr) {
  const std::vector<std::string> w = split_ws(sentence);
  if (len) *len = int(w.size());
  NgramCounts c;
  for (size_t k = 1; k <= 4; ++k)
    for (size_t i = 0; i + k <= w.size(); ++i) {
      std::string g = w[i];
      for (size_t j = 1; j < k; ++j) g += " " + w[i + j];
      ++c[g];
    }
  return c;
}

int order(const std::string& ngram) {
  return int(std::count(ngram.begin(), ngram.end(), ' '));
}  // n - 1

}  // namespace

std::string normalize_answer(std::string_view answer) {
  // EvalAI's word_tokenize
  std::string s = lower(answer);
  replace_all(s, ",", "");
  replace_all(s, "?", "");
  replace_all(s, "'s", " 's");
  s = strip(s);
  replace_all(s, "\n", " ");
  replace_all(s, "\t", " ");
  s = strip(s);
  return process_digit_article(process_punctuation(s));
}

double vqa_accuracy(std::string_view prediction, const std::vector<std::string>& answers) {
  if (answers.empty()) return 0.0;
  const std::string pred = normalize_answer(prediction);
  std::vector<std::string> gts;
  for (const std::string& a : answers) gts.push_back(normalize_answer(a));
  if (gts.size() == 1) return pred == gts[0] ? 1.0 : 0.0;
  const int64_t matches = std::count(gts.begin(), gts.end(), pred);
  double sum = 0;
  for (const std::string& g : gts) {  // leave answer i out; count matches among the others
    const int64_t m = matches - (g == pred ? 1 : 0);
    sum += std::min(1.0, double(m) / 3.0);
  }
  return sum / double(gts.size());
}

std::string caption_tokenize(std::string_view text) {
  const std::string s = lower(text);
  std::vector<std::string> tokens;
  std::string cur;
  auto flush = [&] {
    if (cur.empty()) return;
    // Clitics become their own tokens, as the PTB tokenizer splits them.
    static const std::vector<std::string> clitics = {"n't", "'s", "'re", "'ve", "'ll", "'d", "'m"};
    std::string tail;
    for (const std::string& c : clitics)
      if (cur.size() > c.size() && cur.compare(cur.size() - c.size(), c.size(), c) == 0) {
        tail = c;
        cur.resize(cur.size() - c.size());
        break;
      }
    // Leading/trailing quotes and dashes are punctuation tokens (removed).
    size_t b = 0, e = cur.size();
    while (b < e && (cur[b] == '\'' || cur[b] == '-')) ++b;
    while (e > b && (cur[e - 1] == '\'' || cur[e - 1] == '-')) --e;
    if (e > b) tokens.push_back(cur.substr(b, e - b));
    if (!tail.empty()) tokens.push_back(tail);
    cur.clear();
  };
  for (size_t i = 0; i < s.size(); ++i) {
    const char c = s[i];
    const bool number_period =
        c == '.' && i > 0 && is_digit(s[i - 1]) && i + 1 < s.size() && is_digit(s[i + 1]);
    if (is_space(c) ||
        (std::string_view(".,?!:;\"`()[]{}").find(c) != std::string_view::npos && !number_period))
      flush();
    else
      cur += c;
  }
  flush();
  std::string out;
  for (size_t i = 0; i < tokens.size(); ++i) out += (i ? " " : "") + tokens[i];
  return out;
}

BleuResult corpus_bleu(const std::vector<std::string>& hyps,
                       const std::vector<std::vector<std::string>>& refs) {
  BleuResult r;
  if (hyps.size() != refs.size()) return r;
  std::array<int64_t, 4> guess{}, correct{};
  for (size_t i = 0; i < hyps.size(); ++i) {
    NgramCounts maxref;
    std::vector<int> ref_lens;
    for (const std::string& ref : refs[i]) {
      int len = 0;
      for (const auto& [g, c] : ngrams(ref, &len)) maxref[g] = std::max(maxref[g], c);
      ref_lens.push_back(len);
    }
    int test_len = 0;
    const NgramCounts counts = ngrams(hyps[i], &test_len);
    int closest = ref_lens.empty() ? 0 : ref_lens[0];  // closest length; ties go to the shorter
    for (int l : ref_lens)
      if (std::abs(l - test_len) < std::abs(closest - test_len) ||
          (std::abs(l - test_len) == std::abs(closest - test_len) && l < closest))
        closest = l;
    r.hyp_len += test_len;
    r.ref_len += closest;
    for (int k = 0; k < 4; ++k) guess[size_t(k)] += std::max(0, test_len - k);
    for (const auto& [g, c] : counts) {
      auto it = maxref.find(g);
      correct[size_t(order(g))] += std::min(c, it == maxref.end() ? 0 : it->second);
    }
  }
  constexpr double tiny = 1e-15, small = 1e-9;
  const double ratio = (double(r.hyp_len) + tiny) / (double(r.ref_len) + small);
  double prod = 1.0;
  for (int n = 0; n < 4; ++n) {
    prod *= (double(correct[size_t(n)]) + tiny) / (double(guess[size_t(n)]) + small);
    r.bleu[size_t(n)] = std::pow(prod, 1.0 / (n + 1));
    if (ratio < 1) r.bleu[size_t(n)] *= std::exp(1 - 1 / ratio);
  }
  return r;
}

double cider_d(const std::vector<std::string>& hyps, const std::vector<std::vector<std::string>>& refs,
               std::vector<double>* per_image) {
  if (per_image) per_image->clear();
  if (hyps.empty() || hyps.size() != refs.size()) return 0.0;
  std::vector<std::vector<NgramCounts>> ref_counts(refs.size());
  std::map<std::string, double> df;  // in how many images' reference sets an n-gram appears
  for (size_t i = 0; i < refs.size(); ++i) {
    std::map<std::string, bool> seen;
    for (const std::string& r : refs[i]) {
      ref_counts[i].push_back(ngrams(r));
      for (const auto& [g, c] : ref_counts[i].back()) seen[g] = true;
    }
    for (const auto& [g, b] : seen) df[g] += 1;
  }
  const double log_n = std::log(double(refs.size()));
  struct Vec {
    std::array<std::map<std::string, double>, 4> w;  // per order: n-gram -> tf-idf
    std::array<double, 4> norm{};
    int length = 0;  // coco-caption counts the bigrams here (its `if n == 1`), kept for identical numbers
  };
  auto to_vec = [&](const NgramCounts& counts) {
    Vec v;
    for (const auto& [g, tf] : counts) {
      auto it = df.find(g);
      const double idf = log_n - std::log(std::max(1.0, it == df.end() ? 0.0 : it->second));
      const int n = order(g);
      const double x = double(tf) * idf;
      v.w[size_t(n)][g] = x;
      v.norm[size_t(n)] += x * x;
      if (n == 1) v.length += tf;
    }
    for (double& x : v.norm) x = std::sqrt(x);
    return v;
  };
  constexpr double sigma = 6.0;
  double total = 0;
  for (size_t i = 0; i < hyps.size(); ++i) {
    const Vec h = to_vec(ngrams(hyps[i]));
    std::array<double, 4> score{};
    for (const NgramCounts& rc : ref_counts[i]) {
      const Vec r = to_vec(rc);
      const double delta = double(h.length - r.length);
      for (size_t n = 0; n < 4; ++n) {
        double val = 0;
        for (const auto& [g, x] : h.w[n]) {
          auto it = r.w[n].find(g);
          const double y = it == r.w[n].end() ? 0.0 : it->second;
          val += std::min(x, y) * y;  // clipped
        }
        if (h.norm[n] != 0 && r.norm[n] != 0) val /= h.norm[n] * r.norm[n];
        score[n] += val * std::exp(-(delta * delta) / (2 * sigma * sigma));
      }
    }
    double s = (score[0] + score[1] + score[2] + score[3]) / 4.0;
    s = refs[i].empty() ? 0.0 : s / double(refs[i].size()) * 10.0;
    if (per_image) per_image->push_back(s);
    total += s;
  }
  return total / double(hyps.size());
}

YesNo parse_yes_no(std::string_view answer) {
  const std::string s = lower(answer);
  size_t i = 0;
  while (i < s.size()) {
    while (i < s.size() && !(s[i] >= 'a' && s[i] <= 'z')) ++i;
    size_t j = i;
    while (j < s.size() && s[j] >= 'a' && s[j] <= 'z') ++j;
    const std::string_view w(s.data() + i, j - i);
    if (w == "yes") return YesNo::Yes;
    if (w == "no") return YesNo::No;
    i = j;
  }
  return YesNo::Unknown;
}

void PopeCounts::add(bool label_yes, YesNo pred) {
  ++total;
  if (pred == YesNo::Unknown) ++unknown;
  if (label_yes)
    (pred == YesNo::Yes ? tp : fn) += 1;
  else if (pred == YesNo::Yes)
    ++fp;
  else if (pred == YesNo::No)
    ++tn;
}

PopeMetrics pope_metrics(const PopeCounts& c) {
  PopeMetrics m;
  m.count = c.total;
  m.unknown = c.unknown;
  if (c.total == 0) return m;
  m.accuracy = double(c.tp + c.tn) / double(c.total);
  m.precision = c.tp + c.fp ? double(c.tp) / double(c.tp + c.fp) : 0.0;
  m.recall = c.tp + c.fn ? double(c.tp) / double(c.tp + c.fn) : 0.0;
  m.f1 = m.precision + m.recall > 0 ? 2 * m.precision * m.recall / (m.precision + m.recall) : 0.0;
  m.yes_ratio = double(c.tp + c.fp) / double(c.total);
  return m;
}

}  // namespace iris::eval
