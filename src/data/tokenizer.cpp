#include "data/tokenizer.hpp"

#include <sentencepiece_processor.h>
#include <sentencepiece_trainer.h>

#include <algorithm>
#include <unordered_map>

#include "core/error.hpp"
#include "core/file_io.hpp"

namespace bmojo {

namespace {

constexpr std::string_view kMeta = "\xE2\x96\x81";  // U+2581, SentencePiece's whitespace symbol

// Length of the well-formed UTF-8 character at s[i], or 0 when the bytes there are not one
// (overlong forms, surrogates and code points above U+10FFFF count as invalid).
size_t utf8_char_length(std::string_view s, size_t i) {
  const auto b = [&](size_t k) { return static_cast<unsigned char>(s[k]); };
  const unsigned char c = b(i);
  const size_t left = s.size() - i;
  const auto cont = [&](size_t k) { return (b(k) & 0xC0) == 0x80; };
  if (c < 0x80) return 1;
  if (c >= 0xC2 && c <= 0xDF) return left >= 2 && cont(i + 1) ? 2 : 0;
  if (c >= 0xE0 && c <= 0xEF) {
    if (left < 3 || !cont(i + 1) || !cont(i + 2)) return 0;
    if (c == 0xE0 && b(i + 1) < 0xA0) return 0;   // overlong
    if (c == 0xED && b(i + 1) >= 0xA0) return 0;  // surrogates
    return 3;
  }
  if (c >= 0xF0 && c <= 0xF4) {
    if (left < 4 || !cont(i + 1) || !cont(i + 2) || !cont(i + 3)) return 0;
    if (c == 0xF0 && b(i + 1) < 0x90) return 0;   // overlong
    if (c == 0xF4 && b(i + 1) >= 0x90) return 0;  // above U+10FFFF
    return 4;
  }
  return 0;
}

// Documents cut into training sentences: at newlines, and long lines at a space (or hard) so that none
// exceeds the limit.
class DocumentSentences : public sentencepiece::SentenceIterator {
 public:
  DocumentSentences(const std::vector<std::string>& docs, size_t limit) : docs_(docs), limit_(limit) {
    Next();
  }
  bool done() const override { return done_; }
  const std::string& value() const override { return value_; }
  sentencepiece::util::Status status() const override { return {}; }
  void Next() override {
    for (;;) {
      if (doc_ >= docs_.size()) {
        done_ = true;
        return;
      }
      const std::string& d = docs_[doc_];
      if (pos_ >= d.size()) {
        ++doc_;
        pos_ = 0;
        continue;
      }
      size_t end = d.find('\n', pos_);
      if (end == std::string::npos) end = d.size();
      size_t next = end + 1;
      if (end - pos_ > limit_) {
        end = pos_ + limit_;
        const size_t space = d.rfind(' ', end);
        if (space != std::string::npos && space > pos_ + limit_ / 2) end = space;
        next = end;
      }
      value_ = d.substr(pos_, end - pos_);
      pos_ = next;
      if (!value_.empty()) return;
    }
  }

 private:
  const std::vector<std::string>& docs_;
  size_t limit_;
  size_t doc_ = 0, pos_ = 0;
  std::string value_;
  bool done_ = false;
};

// A protobuf varint at text[at], advancing at; false when it runs past the end or past 64 bits.
bool read_varint(std::string_view text, size_t& at, uint64_t& value) {
  value = 0;
  for (int shift = 0; shift < 64 && at < text.size(); shift += 7) {
    const auto byte = static_cast<unsigned char>(text[at++]);
    value |= static_cast<uint64_t>(byte & 0x7F) << shift;
    if ((byte & 0x80) == 0) return true;
  }
  return false;
}

// Walks the fields of a serialized protobuf message, calling f(field, bytes) for each length-delimited one;
// false when the message is malformed (SentencePiece then refuses it itself).
template <class F>
bool for_each_bytes_field(std::string_view message, F&& f) {
  size_t at = 0;
  while (at < message.size()) {
    uint64_t key = 0, value = 0;
    if (!read_varint(message, at, key)) return false;
    switch (key & 7) {
      case 0:
        if (!read_varint(message, at, value)) return false;
        break;
      case 1:
        at += 8;
        break;
      case 5:
        at += 4;
        break;
      case 2:
        if (!read_varint(message, at, value) || value > message.size() - std::min(at, message.size()))
          return false;
        f(key >> 3, message.substr(at, value));
        at += value;
        break;
      default:
        return false;
    }
    if (at > message.size()) return false;
  }
  return true;
}

// The first piece of a serialized ModelProto (field 1: SentencePiece messages, their field 1 the piece)
// that is empty or holds a NUL byte, quoted; "" when there is none. SentencePiece builds its trie from the
// pieces without checking them, and its trie builder throws through the library on such a key (found by
// fuzz_tokenizer), so a model file is checked here first.
std::string bad_piece(std::string_view proto) {
  std::string bad;
  int index = 0;
  for_each_bytes_field(proto, [&](uint64_t field, std::string_view piece_message) {
    if (field != 1 || !bad.empty()) return;
    std::string_view piece;
    bool named = false;
    for_each_bytes_field(piece_message, [&](uint64_t f, std::string_view bytes) {
      if (f == 1) piece = bytes, named = true;
    });
    if (!named || piece.empty() || piece.find('\0') != std::string_view::npos)
      bad = "piece " + std::to_string(index) + (named && !piece.empty() ? " holds a NUL byte" : " is empty");
    ++index;
  });
  return bad;
}

}  // namespace

uint64_t byte_tokenizer_hash() {
  static const uint64_t h = [] {
    constexpr std::string_view tag = "bmojo-byte-tokenizer-v1";
    return fnv1a64(tag.data(), tag.size());
  }();
  return h;
}

Tokenizer::Tokenizer() : hash_(byte_tokenizer_hash()) {}
Tokenizer::~Tokenizer() = default;
Tokenizer::Tokenizer(Tokenizer&&) noexcept = default;
Tokenizer& Tokenizer::operator=(Tokenizer&&) noexcept = default;

Tokenizer Tokenizer::load(const std::string& spec) {
  if (spec == "byte") return Tokenizer();
  return from_sentencepiece(read_file(spec), spec);
}

Tokenizer Tokenizer::from_sentencepiece(std::string model_bytes, const std::string& where) {
  Tokenizer t;
  t.kind_ = TokenizerKind::kSentencePiece;
  t.sp_ = std::make_unique<sentencepiece::SentencePieceProcessor>();
  const std::string bad = bad_piece(model_bytes);
  check(bad.empty(), where + ": not a usable SentencePiece model (" + bad + ")");
  sentencepiece::util::Status status;
  try {
    status = t.sp_->LoadFromSerializedProto(model_bytes);
  } catch (const std::exception& e) {  // the library's own code throws on some malformed models
    fail(where + ": not a SentencePiece model (" + e.what() + ")");
  }
  check(status.ok(), where + ": not a SentencePiece model (" + status.ToString() + ")");
  t.vocab_ = t.sp_->GetPieceSize();
  t.byte_ids_.assign(256, -1);
  t.pieces_.resize(t.vocab_);
  for (int id = 0; id < t.vocab_; ++id) {
    const std::string& piece = t.sp_->IdToPiece(id);
    if (t.sp_->IsByte(id)) {
      // "<0xNN>"
      const int value = std::stoi(piece.substr(3, 2), nullptr, 16);
      t.byte_ids_[value] = id;
      t.pieces_[id] = std::string(1, static_cast<char>(value));
    } else if (t.sp_->IsControl(id) || t.sp_->IsUnknown(id)) {
      t.pieces_[id].clear();
    } else {
      std::string s;
      for (size_t i = 0; i < piece.size();) {
        if (piece.compare(i, kMeta.size(), kMeta) == 0) {
          s += ' ';
          i += kMeta.size();
        } else {
          s += piece[i++];
        }
      }
      t.pieces_[id] = std::move(s);
    }
  }
  check(std::none_of(t.byte_ids_.begin(), t.byte_ids_.end(), [](int32_t id) { return id < 0; }),
        where +
            ": this SentencePiece model has no byte fallback pieces <0x00>..<0xFF>; bmojo needs them so "
            "that every byte sequence can be encoded (train with byte_fallback=true, as `bmojo data "
            "tokenizer` does)");
  t.hash_ = fnv1a64(model_bytes.data(), model_bytes.size(), byte_tokenizer_hash() ^ 0x5350ULL);
  t.model_bytes_ = std::move(model_bytes);
  return t;
}

std::vector<int32_t> Tokenizer::encode(std::string_view text) const {
  if (kind_ == TokenizerKind::kByte) {
    std::vector<int32_t> ids(text.size());
    for (size_t i = 0; i < text.size(); ++i) ids[i] = static_cast<unsigned char>(text[i]);
    return ids;
  }
  std::vector<int32_t> out;
  out.reserve(text.size() / 3 + 4);
  std::vector<int> ids;
  size_t run = 0;  // start of the pending run of well-formed text
  const auto flush = [&](size_t end) {
    if (end > run) {
      ids.clear();
      const auto status = sp_->Encode(text.substr(run, end - run), &ids);
      check(status.ok(), "SentencePiece failed to encode text: " + status.ToString());
      for (int id : ids) {
        if (sp_->IsUnknown(id)) fail("SentencePiece produced <unk> although the model has byte fallback");
        out.push_back(id);
      }
    }
  };
  for (size_t i = 0; i < text.size();) {
    size_t n = utf8_char_length(text, i);
    const bool plain = n > 0 && text[i] != '\0' && text.compare(i, kMeta.size(), kMeta) != 0;
    if (plain) {
      i += n;
      continue;
    }
    flush(i);
    if (n == 0) n = 1;
    for (size_t k = 0; k < n; ++k) out.push_back(byte_ids_[static_cast<unsigned char>(text[i + k])]);
    i += n;
    run = i;
  }
  flush(text.size());
  return out;
}

std::string Tokenizer::decode(int32_t id) const {
  if (id < 0 || id >= vocab_) return "<|" + std::to_string(id) + "|>";
  if (kind_ == TokenizerKind::kByte) return std::string(1, static_cast<char>(id));
  return pieces_[id];
}

std::string Tokenizer::decode(const std::vector<int32_t>& ids) const {
  std::string s;
  for (int32_t id : ids) s += decode(id);
  return s;
}

int Tokenizer::token_bytes(int32_t id) const {
  if (id < 0 || id >= vocab_) return 0;
  if (kind_ == TokenizerKind::kByte) return 1;
  return static_cast<int>(pieces_[id].size());
}

std::string train_sentencepiece(const std::vector<std::string>& documents,
                                const SentencePieceTrainOptions& o) {
  check(o.vocab_size >= 260,
        "tokenizer vocab_size must be at least 260 (3 special + 256 byte pieces + 1), got " +
            std::to_string(o.vocab_size));
  check(o.max_piece_bytes >= 16, "max_piece_bytes must be at least 16");
  check(!documents.empty(), "no documents to train the tokenizer on");
  const std::unordered_map<std::string, std::string> args = {
      {"model_type", "bpe"},
      {"vocab_size", std::to_string(o.vocab_size)},
      {"byte_fallback", "true"},
      {"normalization_rule_name", "identity"},
      {"remove_extra_whitespaces", "false"},
      {"add_dummy_prefix", "false"},
      {"split_digits", "true"},
      {"character_coverage", "0.9995"},
      {"max_sentence_length", std::to_string(o.max_piece_bytes + 16)},
      {"input_sentence_size", std::to_string(o.max_sentences)},
      {"shuffle_input_sentence", "true"},
      {"num_threads", std::to_string(std::max(1, o.threads))},
      {"minloglevel", o.verbose ? "0" : "2"},
      {"model_prefix", ""},
  };
  DocumentSentences sentences(documents, static_cast<size_t>(o.max_piece_bytes));
  std::string model;
  const auto status = sentencepiece::SentencePieceTrainer::Train(args, &sentences, &model);
  check(status.ok(), "SentencePiece training failed: " + status.ToString());
  check(!model.empty(), "SentencePiece training produced no model");
  return model;
}

}  // namespace bmojo
