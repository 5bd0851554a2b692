#include "tokenizer/testing/corpus.h"

#include <cstdio>
#include <fstream>
#include <string_view>

#include "absl/strings/str_cat.h"

namespace qllm::tokenizer::testing {
namespace {

class Rng {
 public:
  explicit Rng(uint64_t seed) : state_(seed) {}
  uint64_t Next() {
    uint64_t z = (state_ += 0x9E3779B97F4A7C15ULL);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
    return z ^ (z >> 31);
  }
  // Uniform in [lo, hi].
  uint32_t Range(uint32_t lo, uint32_t hi) {
    return lo + static_cast<uint32_t>(Next() % (hi - lo + 1));
  }
  template <typename T, size_t N>
  const T& Pick(const T (&items)[N]) {
    return items[Next() % N];
  }

 private:
  uint64_t state_;
};

void AppendCp(uint32_t cp, std::string* out) {
  if (cp < 0x80) {
    out->push_back(static_cast<char>(cp));
  } else if (cp < 0x800) {
    out->push_back(static_cast<char>(0xC0 | (cp >> 6)));
    out->push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  } else if (cp < 0x10000) {
    out->push_back(static_cast<char>(0xE0 | (cp >> 12)));
    out->push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3F)));
    out->push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  } else {
    out->push_back(static_cast<char>(0xF0 | (cp >> 18)));
    out->push_back(static_cast<char>(0x80 | ((cp >> 12) & 0x3F)));
    out->push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3F)));
    out->push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  }
}

constexpr std::string_view kWords[] = {"the",
                                       "of",
                                       "and",
                                       "to",
                                       "in",
                                       "is",
                                       "that",
                                       "for",
                                       "it",
                                       "as",
                                       "was",
                                       "with",
                                       "be",
                                       "by",
                                       "on",
                                       "not",
                                       "he",
                                       "I",
                                       "this",
                                       "are",
                                       "or",
                                       "his",
                                       "from",
                                       "at",
                                       "which",
                                       "but",
                                       "have",
                                       "an",
                                       "had",
                                       "they",
                                       "you",
                                       "were",
                                       "their",
                                       "one",
                                       "all",
                                       "we",
                                       "can",
                                       "her",
                                       "has",
                                       "there",
                                       "been",
                                       "if",
                                       "more",
                                       "when",
                                       "will",
                                       "would",
                                       "who",
                                       "so",
                                       "no",
                                       "memory",
                                       "attention",
                                       "context",
                                       "question",
                                       "retrieval",
                                       "tokenizer",
                                       "Transformer",
                                       "document",
                                       "approximately",
                                       "internationalization",
                                       "OpenAI",
                                       "McDonald",
                                       "iPhone",
                                       "naïve",
                                       "café",
                                       "résumé",
                                       "Zürich",
                                       "coöperate",
                                       "façade",
                                       "Ångström",
                                       "straße",
                                       "ПРИВЕТ",
                                       "мир",
                                       "Ελληνικά",
                                       "HTTPServer",
                                       "snake_case",
                                       "camelCase",
                                       "ALLCAPS",
                                       "x",
                                       "a",
                                       "Q-LLM",
                                       "e.g.",
                                       "U.S.A."};
constexpr std::string_view kContractions[] = {"'s",  "'t", "'re", "'ve", "'m",  "'ll",
                                              "'d",  "'S", "'T",  "'RE", "'Ve", "'M",
                                              "'LL", "'D", "'x",  "’s",  "''",  "'"};
constexpr std::string_view kPunct[] = {".", ",",  ";", ":", "!", "?", "...", " -- ", "—", "(",
                                       ")", "\"", "«", "»", "“", "”", "!?",  "?!",   "&", "%"};
constexpr std::string_view kCode[] = {
    "int main(int argc, char** argv) {\n  return 0;\n}\n",
    "def f(x):\n    if x <= 0:\n        return []\n    return [i ** 2 for i in range(x)]\n",
    "\tfor (size_t i = 0; i < n; ++i) {\n\t\tsum += a[i] * b[i];\n\t}\n",
    "const re = /\\s+(?!\\S)/gu; // regex\nlet s = `${a}${b}`;\n",
    "SELECT id, name FROM users WHERE age >= 18 AND name LIKE '%bob%';\n",
    "<div class=\"x\"><a href='https://example.com/a?b=1&c=2'>link</a></div>\n",
    "{\"key\": [1, 2.5, -3e10, null, true], \"nested\": {\"k\": \"v\"}}\n",
    "    # comment with trailing spaces   \n    pass\n",
    "x+=1;y-=2;z*=3;w/=4;p%=5;q<<=1;r>>=2;a&&b||!c;a!==b;a===b;=>\n",
    "#include <vector>\nstd::vector<std::pair<int, float>> v{{1, 2.f}};\n",
    "fn main() { println!(\"{:?}\", vec![1u8; 3]); }\r\n",
    "$ ls -la | grep '^d' && echo \"done\" >> /tmp/log 2>&1\n"};
constexpr std::string_view kSpaces[] = {
    " ",      "  ",     "   ",      "    ",   "        ", "\t",     "\t\t",   " \t ",
    "\n",     "\n\n",   "\n\n\n",   "\r\n",   "\r\n\r\n", "\r",     " \n",    "  \n  ",
    "\n ",    "\u00a0", "\u3000",   "\u2003", "\u2009 ",  "\u202f", "\u2028", "\u2029",
    "\u205f", "\u1680", " \u00a0 ", "\v",     "\f"};
constexpr std::string_view kEmoji[] = {"😀",
                                       "😂",
                                       "🤖",
                                       "🎉",
                                       "👍🏽",
                                       "👨‍👩‍👧‍👦",
                                       "🏳️‍🌈",
                                       "🇫🇷",
                                       "🇯🇵🇺🇸",
                                       "1️⃣",
                                       "❤️",
                                       "✈︎",
                                       "🧑🏿‍💻",
                                       "🐈‍⬛",
                                       "©",
                                       "™",
                                       "♠",
                                       "☃",
                                       "⚡",
                                       "🀄",
                                       "🂡",
                                       "🜁",
                                       "𝕏",
                                       "𝔘𝔫𝔦𝔠𝔬𝔡𝔢"};
constexpr std::string_view kScripts[] = {"नमस्ते दुनिया",
                                         "क्षत्रिय",
                                         "مرحبا بالعالم",
                                         "السَّلَامُ عَلَيْكُمْ",
                                         "שָׁלוֹם עוֹלָם",
                                         "สวัสดีชาวโลก",
                                         "ภาษาไทย",
                                         "Tiếng Việt có dấu",
                                         "ᐊᐃᑉᐱᖅ",
                                         "ქართული",
                                         "Հայերեն",
                                         "አማርኛ",
                                         "ગુજરાતી",
                                         "தமிழ்",
                                         "ꯃꯤꯇꯩ",
                                         "ᚠᚢᚦᚨᚱᚲ",
                                         "𐌰𐌱𐌲 gothic",
                                         "𒀀𒀁 cuneiform",
                                         "Z̤͔ͧ̑̓ä͖̭̈̇lͮ̒ͫǧ̗͚̚o̙̔ͮ̇͐̇",
                                         "e\u0301",
                                         "\u0301leading",
                                         "9\u20e3",
                                         "a\u0308\u0304\u0323",
                                         "ﷺ",
                                         "ﬁ ﬂ ﬃ",
                                         "Ⅻ ⅷ ½ ¾ ² ³ ①⑳",
                                         "٠١٢٣٤٥٦٧٨٩",
                                         "०१२३४५",
                                         "０１２３ＡＢＣ",
                                         "𝟘𝟙𝟚𝟛",
                                         "'ſ"};

void AddProse(Rng& rng, std::string* out) {
  const uint32_t words = rng.Range(5, 60);
  for (uint32_t i = 0; i < words; ++i) {
    std::string_view w = rng.Pick(kWords);
    if (i > 0) out->append(rng.Range(0, 15) == 0 ? "  " : " ");
    if (rng.Range(0, 7) == 0 && w[0] >= 'a' && w[0] <= 'z') {
      out->push_back(static_cast<char>(w[0] - 'a' + 'A'));
      out->append(w.substr(1));
    } else {
      out->append(w);
    }
    if (rng.Range(0, 9) == 0) out->append(rng.Pick(kContractions));
    if (rng.Range(0, 6) == 0) out->append(rng.Pick(kPunct));
  }
  out->append(rng.Range(0, 2) == 0 ? ".\n" : ". ");
}

void AddNumbers(Rng& rng, std::string* out) {
  switch (rng.Range(0, 5)) {
    case 0:
      absl::StrAppend(out, rng.Next() % 100000, " ");
      break;
    case 1: {
      const uint32_t len = rng.Range(10, 300);  // Long digit run.
      for (uint32_t i = 0; i < len; ++i) out->push_back(static_cast<char>('0' + rng.Range(0, 9)));
      out->push_back(' ');
      break;
    }
    case 2:
      absl::StrAppend(out, rng.Range(0, 999), ",", rng.Range(100, 999), ",", rng.Range(100, 999),
                      ".", rng.Range(0, 99), " ");
      break;
    case 3:
      absl::StrAppend(out, "-", rng.Range(0, 9), ".", rng.Next() % 1000000, "e-", rng.Range(1, 40),
                      " ");
      break;
    case 4:
      absl::StrAppend(out, "v", rng.Range(0, 20), ".", rng.Range(0, 20), ".", rng.Range(0, 99),
                      " +1 (555) 0", rng.Range(100, 999), "-", rng.Range(1000, 9999), " ");
      break;
    default:
      absl::StrAppend(out, "2024-0", rng.Range(1, 9), "-", rng.Range(10, 28), "T",
                      rng.Range(10, 23), ":", rng.Range(10, 59), "Z ");
      break;
  }
}

void AddCjk(Rng& rng, std::string* out) {
  const uint32_t len = rng.Range(1, 400);
  for (uint32_t i = 0; i < len; ++i) {
    switch (rng.Range(0, 9)) {
      case 0:
        AppendCp(rng.Range(0x3041, 0x3096), out);  // Hiragana.
        break;
      case 1:
        AppendCp(rng.Range(0x30A1, 0x30FA), out);  // Katakana.
        break;
      case 2:
        AppendCp(rng.Range(0xAC00, 0xD7A3), out);  // Hangul syllables.
        break;
      case 3:
        AppendCp(rng.Pick({0x3001u, 0x3002u, 0xFF0Cu, 0xFF1Fu, 0x300Cu, 0x300Du}), out);
        break;
      default:
        AppendCp(rng.Range(0x4E00, 0x9FA5), out);  // CJK unified ideographs (Unicode 1.1).
        break;
    }
  }
}

void AddRare(Rng& rng, std::string* out) {
  static constexpr uint32_t kRare[] = {
      0xFFFD, 0xFFFE,  0xFFFF,  0xFDD0,  0xE000,  0xF8FF, 0xF0000, 0x10FFFD, 0x10FFFF, 0x200B,
      0x200C, 0x200D,  0x2060,  0x00AD,  0x0001,  0x001F, 0x007F,  0x0080,   0x009F,   0x061C,
      0x2066, 0x2069,  0x202E,  0xE0001, 0xE0041, 0xFE0F, 0x0000,  0x1D11E,  0x1F3FB,  0xD7FF,
      0xE001, 0x10000, 0x1D400, 0x2028,  0x00A0,  0x0378, 0x0340,  0x0345,   0x034F,   0x1AB0};
  const uint32_t len = rng.Range(1, 12);
  for (uint32_t i = 0; i < len; ++i) {
    AppendCp(rng.Pick(kRare), out);
    if (rng.Range(0, 3) == 0) out->push_back(' ');
    if (rng.Range(0, 3) == 0) AppendCp(rng.Range(0x0300, 0x036F), out);  // Stray combining mark.
  }
}

void AddSpecial(Rng& rng, const std::vector<std::string>& specials, std::string* out) {
  if (specials.empty()) return;
  const std::string& s = specials[rng.Next() % specials.size()];
  switch (rng.Range(0, 4)) {
    case 0:  // Truncated: must stay plain text.
      out->append(s.substr(0, s.size() - 1));
      break;
    case 1:  // Two adjacent.
      absl::StrAppend(out, s, specials[rng.Next() % specials.size()]);
      break;
    case 2:
      absl::StrAppend(out, " ", s, "\n");
      break;
    default:
      out->append(s);
      break;
  }
}

}  // namespace

std::vector<std::string> MakeCorpus(size_t min_bytes,
                                    const std::vector<std::string>& special_tokens, uint64_t seed) {
  Rng rng(seed);
  std::vector<std::string> docs;
  size_t total = 0;
  size_t next_special = 0;  // Walks every special token in order so each appears whole.
  while (total < min_bytes) {
    std::string doc;
    const uint32_t target = rng.Range(100, 12000);
    while (doc.size() < target) {
      switch (rng.Range(0, 19)) {
        case 0:
        case 1:
        case 2:
        case 3:
        case 4:
        case 5:
        case 6:
          AddProse(rng, &doc);
          break;
        case 7:
        case 8:
          doc.append(rng.Pick(kCode));
          break;
        case 9:
        case 10:
          AddNumbers(rng, &doc);
          break;
        case 11:
          for (uint32_t k = rng.Range(1, 4); k > 0; --k) doc.append(rng.Pick(kSpaces));
          break;
        case 12:
          doc.append(std::string(rng.Range(1, 200), rng.Range(0, 1) ? ' ' : '\n'));
          break;
        case 13:
          AddCjk(rng, &doc);
          break;
        case 14:
          for (uint32_t k = rng.Range(1, 6); k > 0; --k) doc.append(rng.Pick(kEmoji));
          break;
        case 15:
          doc.append(rng.Pick(kScripts));
          doc.push_back(' ');
          break;
        case 16:
          AddRare(rng, &doc);
          break;
        case 17:
          AddSpecial(rng, special_tokens, &doc);
          break;
        case 18:
          if (!special_tokens.empty()) {
            doc.append(special_tokens[next_special++ % special_tokens.size()]);
          }
          break;
        default:
          doc.append(std::string(rng.Range(1, 120), rng.Pick({'=', '-', '*', '#', '.', '~'})));
          break;
      }
    }
    total += doc.size();
    docs.push_back(std::move(doc));
  }
  return docs;
}

absl::Status WriteCorpusFile(const std::string& path, const std::vector<std::string>& docs) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  auto put_u32 = [&](uint32_t v) { out.write(reinterpret_cast<const char*>(&v), 4); };
  put_u32(static_cast<uint32_t>(docs.size()));
  for (const std::string& d : docs) {
    put_u32(static_cast<uint32_t>(d.size()));
    out.write(d.data(), static_cast<std::streamsize>(d.size()));
  }
  out.close();
  if (!out) return absl::InternalError(absl::StrCat("cannot write corpus file ", path));
  return absl::OkStatus();
}

absl::StatusOr<std::vector<std::vector<int32_t>>> ReadIdsFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return absl::NotFoundError(absl::StrCat("cannot open ids file ", path));
  auto get_u32 = [&](uint32_t* v) {
    return static_cast<bool>(in.read(reinterpret_cast<char*>(v), 4));
  };
  uint32_t count = 0;
  if (!get_u32(&count)) return absl::DataLossError(absl::StrCat(path, ": truncated header"));
  std::vector<std::vector<int32_t>> docs(count);
  for (auto& ids : docs) {
    uint32_t n = 0;
    if (!get_u32(&n)) return absl::DataLossError(absl::StrCat(path, ": truncated"));
    ids.resize(n);
    if (n > 0 &&
        !in.read(reinterpret_cast<char*>(ids.data()), static_cast<std::streamsize>(n) * 4)) {
      return absl::DataLossError(absl::StrCat(path, ": truncated ids"));
    }
  }
  return docs;
}

}  // namespace qllm::tokenizer::testing
