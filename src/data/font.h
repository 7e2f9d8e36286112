// A tiny bitmap font for the generated shapes world: 5x7 glyphs for A-Z and 0-9, drawn at an integer scale
// with one column of spacing, so that rendered words and numbers can be read back (OCR questions) at any
// image size.
#pragma once
#include <array>
#include <cstdint>
#include <string_view>

#include "vision/image.h"

namespace iris::data {

constexpr int kGlyphWidth = 5;
constexpr int kGlyphHeight = 7;

// The 7 rows of a glyph, top first; bit 4 is the leftmost column. nullptr for characters the font lacks
// (anything but A-Z, a-z (drawn as capitals) and 0-9).
const uint8_t* glyph(char c);
bool has_glyph(char c);

// Size in pixels of `text` drawn at `scale` (each glyph 5*scale wide, scale pixels between glyphs).
int text_width(std::string_view text, int scale);
inline int text_height(int scale) {
  return kGlyphHeight * scale;
}

// Draws `text` with its top-left corner at (x, y), each glyph pixel a scale x scale block of `colour`,
// clipped to the image (RGB or RGBA; alpha is left alone). A space advances one glyph. Throws iris::Error on
// any other character without a glyph, or scale < 1.
void draw_text(vision::Image& img, int x, int y, std::string_view text, int scale,
               std::array<uint8_t, 3> colour);

}  // namespace iris::data
