#include "bench/needle/haystack.h"

#include <array>
#include <cmath>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"
#include "common/status_macros.h"

namespace qllm::needle {
namespace {

// The word lists of tools/train/corpus.py.
constexpr std::array kNames = {
    "Anna",  "Ben",  "Clara", "David", "Emma", "Felix", "Grace", "Henry", "Iris", "Jack",
    "Kate",  "Leo",  "Mia",   "Noah",  "Olga", "Paul",  "Rosa",  "Sam",   "Tara", "Victor",
    "Wendy", "Yuri", "Zoe",   "Omar",  "Lina", "Hugo",  "Nora",  "Ivan",  "Eva",  "Tom"};
constexpr std::array kNouns = {
    "cat",     "dog",    "bird",    "horse",  "fish",   "tree",  "river",  "mountain", "city",
    "village", "house",  "garden",  "road",   "bridge", "ship",  "train",  "book",     "letter",
    "song",    "story",  "teacher", "farmer", "doctor", "child", "friend", "king",     "queen",
    "lamp",    "door",   "window",  "table",  "chair",  "field", "forest", "lake",     "ocean",
    "island",  "market", "school",  "castle", "tower",  "storm", "wind",   "rain",     "snow",
    "cloud",   "stone",  "flower",  "apple",  "bread",  "coin",  "key",    "map",      "clock",
    "boat",    "wall",   "hill",    "valley", "desert", "moon",  "star",   "sun",      "sky",
    "grass",   "leaf",   "basket",  "candle"};
constexpr std::array kAdjs = {"red",    "blue",   "green", "yellow", "small", "large",  "old",
                              "young",  "quiet",  "loud",  "bright", "dark",  "warm",   "cold",
                              "happy",  "sad",    "quick", "slow",   "tall",  "short",  "soft",
                              "hard",   "clean",  "busy",  "calm",   "wild",  "gentle", "strange",
                              "golden", "silver", "empty", "heavy",  "light", "brave",  "tired"};
constexpr std::array kVerbsPast = {"saw",     "found",   "watched", "followed",   "carried",
                                   "painted", "visited", "crossed", "opened",     "closed",
                                   "built",   "cleaned", "moved",   "lifted",     "reached",
                                   "passed",  "touched", "heard",   "remembered", "forgot",
                                   "liked",   "helped",  "called",  "pushed",     "pulled"};
constexpr std::array kVerbsIntr = {
    "walked", "ran",    "slept",  "waited",  "smiled", "sang",     "laughed",  "rested",
    "danced", "worked", "stayed", "arrived", "left",   "returned", "listened", "wandered"};
constexpr std::array kAdvs = {"slowly",    "quickly", "quietly", "happily", "sadly",
                              "carefully", "loudly",  "gently",  "often",   "early",
                              "late",      "again",   "soon"};
constexpr std::array kPreps = {"near",   "behind", "under",  "above", "beside",
                               "across", "inside", "around", "past",  "toward"};
constexpr std::array kTimes = {
    "In the morning", "At night",    "Later that day", "Every spring", "Once",
    "After the rain", "Before dawn", "In the evening", "Long ago",     "One day"};
constexpr std::array kClassic = {"The grass is green.", "The sky is blue.", "The sun is yellow.",
                                 "Here we go.", "There and back again."};
constexpr std::array kNeedleKeys = {
    "falcon",  "tiger",  "river",   "maple",  "comet",  "harbor", "violet",  "canyon",  "ember",
    "glacier", "meadow", "orchid",  "pepper", "quartz", "raven",  "saffron", "thistle", "walnut",
    "willow",  "zephyr", "lantern", "cobalt", "marble", "nectar", "onyx",    "pebble"};

// SplitMix64: small, fast, and identical everywhere.
class Rng {
 public:
  explicit Rng(uint64_t seed) : state_(seed) {}
  uint64_t Next() {
    uint64_t z = (state_ += 0x9e3779b97f4a7c15ULL);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
  }
  // Uniform in [0, 1) with 53 bits.
  double Uniform() { return static_cast<double>(Next() >> 11) * 0x1.0p-53; }
  // Uniform in [0, n); the modulo bias is below 2^-40 for the small n used here.
  uint64_t Below(uint64_t n) { return Next() % n; }
  template <typename Array>
  absl::string_view Pick(const Array& words) {
    return words[Below(words.size())];
  }

 private:
  uint64_t state_;
};

std::string NounPhrase(Rng& rng) {
  const double r = rng.Uniform();
  if (r < 0.35) return absl::StrCat("the ", rng.Pick(kNouns));
  if (r < 0.75) return absl::StrCat("the ", rng.Pick(kAdjs), " ", rng.Pick(kNouns));
  return std::string(rng.Pick(kNames));
}

std::string Capitalized(std::string s) {
  if (!s.empty() && s[0] >= 'a' && s[0] <= 'z') s[0] = static_cast<char>(s[0] - 'a' + 'A');
  return s;
}

// One filler sentence (corpus.sentence): ends with a period, no leading space.
std::string Sentence(Rng& rng) {
  const double r = rng.Uniform();
  if (r < 0.12) return std::string(rng.Pick(kClassic));
  if (r < 0.30) {
    std::string subject = Capitalized(NounPhrase(rng));
    absl::string_view verb = rng.Pick(kVerbsPast);
    return absl::StrCat(subject, " ", verb, " ", NounPhrase(rng), ".");
  }
  if (r < 0.45) {
    std::string subject = Capitalized(NounPhrase(rng));
    absl::string_view verb = rng.Pick(kVerbsIntr);
    return absl::StrCat(subject, " ", verb, " ", rng.Pick(kAdvs), ".");
  }
  if (r < 0.60) {
    std::string subject = Capitalized(NounPhrase(rng));
    absl::string_view verb = rng.Pick(kVerbsIntr);
    absl::string_view prep = rng.Pick(kPreps);
    return absl::StrCat(subject, " ", verb, " ", prep, " ", NounPhrase(rng), ".");
  }
  if (r < 0.72) {
    absl::string_view noun = rng.Pick(kNouns);
    absl::string_view a = rng.Pick(kAdjs);
    return absl::StrCat("The ", noun, " was ", a, " and ", rng.Pick(kAdjs), ".");
  }
  if (r < 0.84) {
    absl::string_view time = rng.Pick(kTimes);
    std::string subject = NounPhrase(rng);
    absl::string_view verb = rng.Pick(kVerbsPast);
    std::string object = NounPhrase(rng);
    absl::string_view prep = rng.Pick(kPreps);
    return absl::StrCat(time, ", ", subject, " ", verb, " ", object, " ", prep, " ",
                        NounPhrase(rng), ".");
  }
  std::string subject = Capitalized(NounPhrase(rng));
  absl::string_view verb = rng.Pick(kVerbsPast);
  std::string object = NounPhrase(rng);
  absl::string_view intr = rng.Pick(kVerbsIntr);
  return absl::StrCat(subject, " ", verb, " ", object, " and ", intr, " ", rng.Pick(kAdvs), ".");
}

// A number of lo..hi digits without a leading zero (corpus._number).
std::string Number(Rng& rng, int lo_digits, int hi_digits) {
  const int digits = lo_digits + static_cast<int>(rng.Below(hi_digits - lo_digits + 1));
  uint64_t low = 1;
  for (int i = 1; i < digits; ++i) low *= 10;
  return absl::StrCat(low + rng.Below(9 * low));
}

struct Needle {
  std::string text;  // Without the leading space.
  double depth = 0.0;
  bool asked = false;
};

absl::StatusOr<int64_t> CountTokens(const tokenizer::Tokenizer& tok, const std::string& text) {
  tokenizer::EncodeOptions options;
  options.parse_special = false;
  ASSIGN_OR_RETURN(std::vector<int32_t> ids, tok.Encode(text, options));
  return static_cast<int64_t>(ids.size());
}

}  // namespace

const char* NeedleTaskName(NeedleTask task) {
  switch (task) {
    case NeedleTask::kPassKey:
      return "passkey";
    case NeedleTask::kMagic:
      return "magic";
  }
  return "?";
}

absl::StatusOr<NeedleTask> ParseNeedleTask(std::string_view name) {
  if (name == "passkey") return NeedleTask::kPassKey;
  if (name == "magic") return NeedleTask::kMagic;
  return absl::InvalidArgumentError(absl::StrCat("unknown needle task \"",
                                                 absl::string_view(name.data(), name.size()),
                                                 "\" (expected passkey or magic)"));
}

uint64_t MixSeed(uint64_t a, uint64_t b) {
  Rng rng(a * 0x9e3779b97f4a7c15ULL + b);
  rng.Next();
  return rng.Next();
}

absl::StatusOr<Haystack> MakeHaystack(const tokenizer::Tokenizer& tokenizer,
                                      const HaystackOptions& options) {
  if (options.context_tokens < 1) {
    return absl::InvalidArgumentError(
        absl::StrCat("context_tokens must be >= 1, got ", options.context_tokens));
  }
  if (!(options.depth >= 0.0 && options.depth <= 1.0)) {
    return absl::InvalidArgumentError(absl::StrCat("depth must be in [0, 1], got ", options.depth));
  }
  Rng rng(MixSeed(options.seed, 0x6e6565646c65ULL));
  Haystack h;
  std::vector<Needle> needles;
  switch (options.task) {
    case NeedleTask::kPassKey: {
      h.answer = Number(rng, 5, 5);
      h.question = "What is the pass key?";
      needles.push_back({absl::StrCat("The pass key is ", h.answer, ". Remember it. ", h.answer,
                                      " is the pass key."),
                         options.depth, true});
      break;
    }
    case NeedleTask::kMagic: {
      const int n = 2 + static_cast<int>(rng.Below(3));
      std::vector<absl::string_view> keys(kNeedleKeys.begin(), kNeedleKeys.end());
      for (int i = 0; i < n; ++i) {  // Partial Fisher-Yates: n distinct keys.
        std::swap(keys[i], keys[i + rng.Below(keys.size() - i)]);
      }
      for (int i = 0; i < n; ++i) {
        const std::string value = Number(rng, 5, 7);
        const bool asked = i == 0;
        if (asked) {
          h.answer = value;
          h.question = absl::StrCat("What is the special magic number for ", keys[i], "?");
        }
        needles.push_back(
            {absl::StrCat("The special magic number for ", keys[i], " is ", value, "."),
             asked ? options.depth : rng.Uniform(), asked});
      }
      break;
    }
  }
  // Token counts add up over " Sentence." pieces: the split regex never joins a piece's
  // leading space to the previous piece.
  std::vector<int64_t> needle_tokens;
  int64_t needle_cost = 0;
  for (const Needle& n : needles) {
    ASSIGN_OR_RETURN(int64_t t, CountTokens(tokenizer, absl::StrCat(" ", n.text)));
    needle_tokens.push_back(t);
    needle_cost += t;
  }
  std::vector<std::string> filler;
  std::vector<int64_t> filler_tokens;
  int64_t total = 0;
  while (total + needle_cost < options.context_tokens || filler.empty()) {
    std::string s = absl::StrCat(" ", Sentence(rng));
    ASSIGN_OR_RETURN(int64_t t, CountTokens(tokenizer, s));
    total += t;
    filler.push_back(std::move(s));
    filler_tokens.push_back(t);
  }
  // Needle i goes before filler sentence slot[i] (corpus.make_document: round(depth * n)).
  const int64_t pieces = static_cast<int64_t>(filler.size());
  std::vector<int64_t> slot;
  for (const Needle& n : needles) slot.push_back(std::llround(n.depth * pieces));
  size_t bytes = 0;
  for (const std::string& s : filler) bytes += s.size();
  for (const Needle& n : needles) bytes += n.text.size() + 1;
  h.context.reserve(bytes);
  int64_t tokens = 0;
  for (int64_t i = 0; i <= pieces; ++i) {
    for (size_t k = 0; k < needles.size(); ++k) {
      if (slot[k] != i) continue;
      if (needles[k].asked) h.needle_token = tokens;
      absl::StrAppend(&h.context, " ", needles[k].text);
      tokens += needle_tokens[k];
    }
    if (i < pieces) {
      h.context += filler[i];
      tokens += filler_tokens[i];
    }
  }
  h.context_tokens = tokens;
  return h;
}

}  // namespace qllm::needle
