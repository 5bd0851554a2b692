#include "tokenizer/internal/utf8.h"

#include <gtest/gtest.h>

#include <random>
#include <string>

namespace qllm::tokenizer::internal {
namespace {

const std::string kFffd = "\xEF\xBF\xBD";

std::string RepairAll(const std::string& bytes) {
  std::string out;
  Utf8Repairer r;
  r.Append(bytes, &out);
  r.Finish(&out);
  return out;
}

TEST(Utf8, ValidatesWellFormedText) {
  EXPECT_TRUE(IsValidUtf8(""));
  EXPECT_TRUE(IsValidUtf8("plain ascii text that is longer than eight bytes"));
  EXPECT_TRUE(IsValidUtf8("é中😀\xF4\x8F\xBF\xBF"));
  EXPECT_FALSE(IsValidUtf8("\xC0\x80"));          // Overlong.
  EXPECT_FALSE(IsValidUtf8("\xED\xA0\x80"));      // Surrogate.
  EXPECT_FALSE(IsValidUtf8("\xF4\x90\x80\x80"));  // Above U+10FFFF.
  EXPECT_FALSE(IsValidUtf8("abc\xE4\xB8"));       // Truncated.
  EXPECT_FALSE(IsValidUtf8("\x80"));
}

TEST(Utf8Repairer, ReplacesMaximalSubparts) {
  EXPECT_EQ(RepairAll("a\x80"
                      "b"),
            "a" + kFffd + "b");
  // E4 B8 is a valid prefix cut short by 'x': one U+FFFD for both bytes.
  EXPECT_EQ(RepairAll("\xE4\xB8x"), kFffd + "x");
  EXPECT_EQ(RepairAll("\xED\xA0\x80"), kFffd + kFffd + kFffd);
  EXPECT_EQ(RepairAll("\xF0\x9F\x98"), kFffd);
}

TEST(Utf8Repairer, HoldsIncompleteCharacterUntilComplete) {
  Utf8Repairer r;
  std::string out;
  r.Append("\xF0\x9F", &out);
  EXPECT_EQ(out, "");
  EXPECT_EQ(r.pending_size(), 2u);
  r.Append("\x98", &out);
  EXPECT_EQ(out, "");
  r.Append("\x80!", &out);
  EXPECT_EQ(out, "😀!");
  EXPECT_EQ(r.pending_size(), 0u);
}

TEST(Utf8Repairer, AnySplitGivesTheOneShotResult) {
  std::mt19937 rng(7);
  const unsigned char alphabet[] = {'a',  0x80, 0xBF, 0xC2, 0xE0, 0xE4, 0xB8, 0xAD,
                                    0xED, 0xA0, 0xF0, 0x9F, 0x98, 0xF4, 0x90, 0xFF};
  for (int trial = 0; trial < 2000; ++trial) {
    std::string bytes;
    const int len = static_cast<int>(rng() % 12);
    for (int i = 0; i < len; ++i) bytes.push_back(static_cast<char>(alphabet[rng() % 16]));
    const std::string expected = RepairAll(bytes);
    Utf8Repairer r;
    std::string out;
    for (char c : bytes) r.Append(std::string(1, c), &out);
    r.Finish(&out);
    ASSERT_EQ(out, expected) << "trial " << trial;
    ASSERT_TRUE(IsValidUtf8(out));
  }
}

}  // namespace
}  // namespace qllm::tokenizer::internal
