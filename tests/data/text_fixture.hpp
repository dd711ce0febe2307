// Small text corpora for the tokenizer, token-file and text-training tests: English-like sentences drawn
// from a fixed word list, so that BPE has something to merge and a model has something to learn.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "core/rng.hpp"

namespace bmojo::test {

inline std::vector<std::string> synthetic_documents(int docs, int sentences_per_doc, uint64_t seed) {
  static const char* words[] = {"the",   "union", "state",  "congress", "people", "nation", "whale", "ship",
                                "sea",   "of",    "and",    "in",       "to",     "a",      "is",    "our",
                                "great", "white", "shall",  "we",       "that",   "this",   "peace", "war",
                                "law",   "year",  "public", "credit",   "ocean",  "captain"};
  constexpr int kWords = sizeof(words) / sizeof(words[0]);
  Rng rng(seed);
  std::vector<std::string> out;
  for (int d = 0; d < docs; ++d) {
    std::string doc;
    for (int s = 0; s < sentences_per_doc; ++s) {
      const int n = 4 + static_cast<int>(rng.below(8));
      for (int w = 0; w < n; ++w) {
        std::string word = words[rng.below(kWords)];
        if (w == 0) word[0] = static_cast<char>(word[0] - 'a' + 'A');
        doc += word;
        doc += w + 1 < n ? " " : ".";
      }
      doc += rng.below(4) == 0 ? "\n" : " ";
    }
    out.push_back(doc);
  }
  return out;
}

}  // namespace bmojo::test
