#include "common/float16.h"

namespace qllm {

uint16_t FloatToFp16(float f) {
  uint32_t bits;
  std::memcpy(&bits, &f, sizeof(bits));
  const uint16_t sign = static_cast<uint16_t>((bits >> 16) & 0x8000u);
  const uint32_t abs = bits & 0x7fffffffu;
  if (abs > 0x7f800000u) return sign | 0x7e00u;   // NaN
  if (abs >= 0x477ff000u) return sign | 0x7c00u;  // Overflow (incl. inf) after rounding.
  if (abs < 0x38800000u) {                        // Result is subnormal or zero.
    if (abs < 0x33000000u) return sign;           // Below half the smallest subnormal.
    const uint32_t exp = abs >> 23;
    const uint32_t mant = (abs & 0x7fffffu) | 0x800000u;
    const uint32_t shift = 126 - exp;  // 14 + (112 - exp) + 1 - 1
    const uint32_t half = mant >> shift;
    const uint32_t rem = mant & ((1u << shift) - 1);
    const uint32_t mid = 1u << (shift - 1);
    uint32_t result = half;
    if (rem > mid || (rem == mid && (half & 1u))) ++result;
    return static_cast<uint16_t>(sign | result);
  }
  const uint32_t rebased = abs - (112u << 23);  // Exponent bias 127 -> 15.
  uint32_t result = rebased >> 13;
  const uint32_t rem = rebased & 0x1fffu;
  if (rem > 0x1000u || (rem == 0x1000u && (result & 1u))) ++result;
  return static_cast<uint16_t>(sign | result);
}

}  // namespace qllm
