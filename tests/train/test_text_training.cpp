// Language modelling on token files: a tiny B'MOJO model learns byte-level text well below the unigram
// level, its perplexity and bits per byte come out the same from the parallel forward and from streaming
// inference, checkpoints record the tokenizer, and a model refuses text of another tokenizer.
#include <gtest/gtest.h>
#include <unistd.h>

#include <cmath>
#include <cstdio>
#include <filesystem>

#include "core/error.hpp"
#include "core/file_io.hpp"
#include "data/text_fixture.hpp"
#include "data/token_file.hpp"
#include "infer/streaming_eval.hpp"
#include "test_util.hpp"
#include "train/checkpoint.hpp"
#include "train/trainer.hpp"

namespace bmojo {
namespace {

namespace fs = std::filesystem;

class TextTraining : public test::ScratchDirTest {
 protected:
  void SetUp() override {
    ScratchDirTest::SetUp();
    write_token_file(path("train.bmtok"), Tokenizer(), test::synthetic_documents(20, 40, 1));
    write_token_file(path("valid.bmtok"), Tokenizer(), test::synthetic_documents(3, 40, 2));
  }

  Config config(const std::string& layers, int steps) const {
    Config c;
    c.model.vocab_size = 256;
    c.model.d_model = 32;
    c.model.n_heads = 2;
    c.model.layers = layers;
    c.model.window = 16;
    c.model.eidetic_per_chunk = 2;
    c.model.eidetic_capacity = 8;
    c.model.d_ff = 64;
    c.train.steps = steps;
    c.train.batch_size = 8;
    c.train.lr = 3e-3;
    c.train.warmup_steps = 10;
    c.train.eval_every = 0;
    c.train.eval_batches = 4;
    c.data.task = "text";
    c.data.seq_len = 64;
    c.data.train_tokens = path("train.bmtok");
    c.data.valid_tokens = path("valid.bmtok");
    c.data.tokenizer = "byte";
    return c;
  }
};

TEST_F(TextTraining, TinyModelLearnsTextAndBothEvaluationsAgree) {
  const Config c = config("BA", 400);
  TrainOptions o;
  o.out_dir = path("run");
  Trainer trainer(c, o);
  const EvalResult before = trainer.evaluate();
  const TrainSummary s = trainer.run();
  // Byte-level English-like text: uniform is ln 256 = 5.55 nats, the unigram level about 2.9.
  EXPECT_GT(before.loss, 5.0);
  EXPECT_LT(s.eval.loss, 1.5) << "the model must learn the words, not only the byte frequencies";
  std::printf("[text] eval loss before %.4f after %.4f\n", before.loss, s.eval.loss);
  EXPECT_GT(s.eval.bytes, 0);
  EXPECT_NEAR(s.eval.bits_per_byte, s.eval.loss / std::log(2.0), 1e-9);  // one byte per token
  StreamingEvalOptions so;
  so.batches = c.train.eval_batches;
  so.block = 7;
  const EvalResult streamed = evaluate_streaming(trainer.model(), c, so);
  EXPECT_EQ(streamed.labelled, s.eval.labelled);
  EXPECT_EQ(streamed.bytes, s.eval.bytes);
  EXPECT_NEAR(streamed.loss, s.eval.loss, 2e-4 * s.eval.loss);
  EXPECT_NEAR(streamed.perplexity(), s.eval.perplexity(), 1e-3 * s.eval.perplexity());
  EXPECT_NEAR(streamed.bits_per_byte, s.eval.bits_per_byte, 2e-4 * s.eval.bits_per_byte);
  // The checkpoint records the tokenizer.
  const CheckpointInfo info = read_checkpoint_info(path("run/checkpoint.safetensors"));
  EXPECT_EQ(info.state.tokenizer_hash, byte_tokenizer_hash());
  EXPECT_EQ(checkpoint_tokenizer_spec(path("run/checkpoint.safetensors"), info), "byte");
}

TEST_F(TextTraining, SentencePieceModelTravelsWithTheCheckpointAndIsChecked) {
  SentencePieceTrainOptions so;
  so.vocab_size = 300;
  so.threads = 1;
  const Tokenizer bpe =
      Tokenizer::from_sentencepiece(train_sentencepiece(test::synthetic_documents(20, 40, 1), so), "bpe");
  write_file_atomic(path("bpe.model"), bpe.model_bytes());
  write_token_file(path("train_bpe.bmtok"), bpe, test::synthetic_documents(20, 40, 1));
  Config c = config("AA", 3);
  c.model.vocab_size = 300;
  c.data.train_tokens = path("train_bpe.bmtok");
  c.data.valid_tokens = "";
  c.data.tokenizer = path("bpe.model");
  TrainOptions o;
  o.out_dir = path("run");
  Trainer(c, o).run();
  const std::string ckpt = path("run/checkpoint.safetensors");
  ASSERT_TRUE(fs::exists(path("run/tokenizer.model")));
  const CheckpointInfo info = read_checkpoint_info(ckpt);
  EXPECT_EQ(info.state.tokenizer_hash, bpe.hash());
  EXPECT_EQ(checkpoint_tokenizer_spec(ckpt, info), path("run/tokenizer.model"));
  // Another tokenizer under that name: refused, as is a missing one.
  fs::remove(path("bpe.model"));
  SentencePieceTrainOptions so2 = so;
  so2.vocab_size = 310;
  write_file_atomic(path("run/tokenizer.model"),
                    train_sentencepiece(test::synthetic_documents(20, 40, 1), so2));
  EXPECT_THROW(checkpoint_tokenizer_spec(ckpt, info), Error);
  fs::remove(path("run/tokenizer.model"));
  EXPECT_THROW(checkpoint_tokenizer_spec(ckpt, info), Error);
  // Training a byte-vocabulary config on BPE tokens is refused up front.
  Config wrong = config("AA", 1);
  wrong.data.train_tokens = path("train_bpe.bmtok");
  EXPECT_THROW(Trainer(wrong, TrainOptions{}), Error);
}

}  // namespace
}  // namespace bmojo
