// Evaluation metrics, numbered as the reference tools number them: VQAv2 answer normalisation and accuracy
// (the EvalAI answer processor that the VQAv2 challenge server and LLaVA's evaluation use), corpus BLEU-1..4
// and CIDEr-D as the coco-caption toolkit computes them, and POPE's yes/no metrics.
#pragma once
#include <array>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace iris::eval {

// VQAv2 / EvalAI normalisation: lower-case (ASCII); ',' and '?' removed; "'s" split off; punctuation removed
// (when it touches a space) or turned into a space; periods not followed by a digit removed; number words to
// digits
// ("two" -> "2", "none" -> "0"); articles (a, an, the) dropped; contractions restored ("dont" -> "don't").
std::string normalize_answer(std::string_view answer);

// VQA accuracy of a prediction. One ground-truth answer: exact match after normalisation (0 or 1). Several
// (VQAv2 has 10): the mean over leave-one-out subsets of min(1, #matches in the subset / 3). Both the
// prediction and the ground truth are normalised (the official script assumes pre-normalised ground truth).
double vqa_accuracy(std::string_view prediction, const std::vector<std::string>& answers);

// coco-caption's tokenisation, approximated without the Stanford PTB tokenizer: lower-case, clitics split off
// ("dog's" -> "dog 's", "don't" -> "do n't"), punctuation tokens removed (. , ? ! : ; - quotes brackets);
// periods inside numbers kept. Returns the tokens joined by single spaces.
std::string caption_tokenize(std::string_view text);

// Corpus BLEU-1..4 with coco-caption's choices: per sentence the closest reference length (ties: the
// shorter), clipped n-gram counts summed over the corpus, geometric mean with 1e-15 / 1e-9 smoothing, brevity
// penalty exp(1 - r/c) when c < r. hyps[i] and refs[i] (one or more references) are pre-tokenised,
// space-separated.
struct BleuResult {
  std::array<double, 4> bleu{};  // BLEU-1 .. BLEU-4
  int64_t hyp_len = 0, ref_len = 0;
};
BleuResult corpus_bleu(const std::vector<std::string>& hyps,
                       const std::vector<std::vector<std::string>>& refs);

// CIDEr-D (coco-caption's "CIDEr"): n = 1..4, TF-IDF vectors with document frequencies over the reference
// sets (idf = log(#images) - log(max(1, df))), clipped cosine similarity per n-gram order, Gaussian length
// penalty (sigma 6) on the difference of the bigram counts, mean over orders, averaged over references, times
// 10; the corpus score is the mean over images. per_image, when given, receives each image's score.
double cider_d(const std::vector<std::string>& hyps, const std::vector<std::vector<std::string>>& refs,
               std::vector<double>* per_image = nullptr);

// POPE: the first word "yes" or "no" of a free-form answer (case-insensitive, words are letter runs).
enum class YesNo { Yes, No, Unknown };
YesNo parse_yes_no(std::string_view answer);

// A POPE confusion matrix. An answer with neither "yes" nor "no" counts as a wrong, negative prediction
// (a false negative on a "yes" probe, and on a "no" probe neither TN nor FP), and is counted in `unknown`.
struct PopeCounts {
  int64_t tp = 0, fp = 0, tn = 0, fn = 0, unknown = 0, total = 0;
  void add(bool label_yes, YesNo pred);
};
struct PopeMetrics {
  int64_t count = 0, unknown = 0;
  double accuracy = 0, precision = 0, recall = 0, f1 = 0, yes_ratio = 0;  // fractions in [0, 1]
};
PopeMetrics pope_metrics(const PopeCounts& c);

}  // namespace iris::eval
