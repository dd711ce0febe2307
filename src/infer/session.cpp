#include "infer/session.hpp"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>

#include "core/blas.hpp"
#include "core/error.hpp"
#include "core/file_io.hpp"
#include "core/parallel.hpp"
#include "kernels/embedding.hpp"
#include "kernels/linear.hpp"
#include "kernels/rmsnorm.hpp"
#include "kernels/rope.hpp"
#include "kernels/swiglu.hpp"
#include "model/bmojo_layer.hpp"
#include "model/memory_estimate.hpp"

namespace bmojo {

namespace {

constexpr char kStateMagic[8] = {'B', 'M', 'J', 'S', 'T', 'A', 'T', 'E'};
constexpr uint32_t kStateVersion = 2;  // 2: eidetic positions are 64-bit

struct Dims {
  int D, H, Hk, Dh, qd, kvd, width, W;
};

Dims dims_of(const ModelConfig& cfg) {
  Dims d;
  d.D = cfg.d_model;
  d.H = cfg.n_heads;
  d.Hk = cfg.kv_heads();
  d.Dh = cfg.head_dim();
  d.qd = d.H * d.Dh;
  d.kvd = d.Hk * d.Dh;
  d.width = d.qd + 2 * d.kvd;
  d.W = cfg.window;
  return d;
}

bool has_ssm_branch(char kind, const ModelConfig& cfg) {
  return layer_parts(kind, cfg).ssm;
}
bool has_fading(char kind, const ModelConfig& cfg) {
  return layer_parts(kind, cfg).fading;
}

// The rotation of rope_apply for one row of `heads` heads, with this position's cos and sin.
void rotate_row(float* row, int heads, int Dh, const float* c, const float* s) {
  const int half = Dh / 2;
  for (int h = 0; h < heads; ++h) {
    float* v = row + h * Dh;
    for (int i = 0; i < half; ++i) {
      const float x1 = v[i], x2 = v[i + half];
      v[i] = x1 * c[i] - x2 * s[i];
      v[i + half] = x2 * c[i] + x1 * s[i];
    }
  }
}

float dot(const float* a, const float* b, int n) {
  float acc = 0.0f;
#pragma omp simd reduction(+ : acc)
  for (int i = 0; i < n; ++i) acc += a[i] * b[i];
  return acc;
}

// Serialisation: little-endian native layout, bounds-checked reads.
class Writer {
 public:
  template <typename T>
  void put(const T& v) {
    out_.append(reinterpret_cast<const char*>(&v), sizeof(T));
  }
  void floats(const float* p, size_t n) {
    put<uint64_t>(n);
    if (n > 0) out_.append(reinterpret_cast<const char*>(p), n * sizeof(float));
  }
  std::string& bytes() { return out_; }

 private:
  std::string out_;
};

class Reader {
 public:
  Reader(const std::string& bytes, std::string path) : s_(bytes), path_(std::move(path)) {}
  template <typename T>
  T get() {
    need(sizeof(T));
    T v;
    std::memcpy(&v, s_.data() + at_, sizeof(T));
    at_ += sizeof(T);
    return v;
  }
  // Reads a float array whose length must be `expected` (or at most `max_count` when expected < 0). The
  // count is checked against the bytes left before anything is sized from it, and every value must be
  // finite: a state with a valid checksum can still be hostile.
  std::vector<float> floats(int64_t expected, const std::string& what, uint64_t max_count = 0) {
    const uint64_t n = get<uint64_t>();
    check(n <= (s_.size() - at_) / sizeof(float),
          "state file '" + path_ + "': " + what + " claims " + std::to_string(n) +
              " values, more than the file holds (truncated or crafted)");
    if (expected >= 0)
      check(n == static_cast<uint64_t>(expected), "state file '" + path_ + "': " + what + " holds " +
                                                      std::to_string(n) + " values, this model expects " +
                                                      std::to_string(expected));
    else
      check(n <= max_count, "state file '" + path_ + "': " + what + " holds " + std::to_string(n) +
                                " values, more than this model can hold (" + std::to_string(max_count) + ")");
    std::vector<float> v(n);
    if (n > 0) std::memcpy(v.data(), s_.data() + at_, n * sizeof(float));
    at_ += n * sizeof(float);
    for (float x : v)
      if (!std::isfinite(x)) fail("state file '" + path_ + "': " + what + " holds a non-finite value");
    return v;
  }
  size_t at() const { return at_; }

 private:
  void need(size_t n) {
    check(n <= s_.size() - at_, "state file '" + path_ + "' is truncated (needs " + std::to_string(at_ + n) +
                                    " bytes, has " + std::to_string(s_.size()) + ")");
  }
  const std::string& s_;
  std::string path_;
  size_t at_ = 0;
};

}  // namespace

void PositionRows::reset(int row_width, int keep_rows) {
  width = row_width;
  keep = keep_rows;
  first = 0;
  count = 0;
  data.clear();
  data.shrink_to_fit();
}

void PositionRows::append(const float* rows, int64_t ld, int64_t n) {
  const auto rows_held = [&] { return static_cast<int64_t>(data.size()) / width; };
  if (count + n > rows_held()) {
    if (keep > 0) {
      const int64_t drop = std::max<int64_t>(0, count - keep);
      if (drop > 0) {
        std::memmove(data.data(), data.data() + drop * width, sizeof(float) * (count - drop) * width);
        first += drop;
        count -= drop;
      }
      const int64_t rows_needed =
          std::max(count + n, static_cast<int64_t>(keep) + std::max<int64_t>(n, keep));
      if (rows_needed > rows_held()) data.resize(rows_needed * width);
    } else {
      data.resize(std::max(count + n, 2 * count) * width);
    }
  }
  for (int64_t i = 0; i < n; ++i)
    std::memcpy(data.data() + (count + i) * width, rows + i * ld, sizeof(float) * width);
  count += n;
}

size_t LayerState::bytes() const {
  const auto vec = [](const std::vector<float>& v) { return v.size() * sizeof(float); };
  return vec(ssm.conv) + vec(ssm.ssm) + kv.bytes() + kvf.bytes() + vec(y_prev) + vec(chunk_scores) +
         vec(chunk_kv) + memory.entries().size() * sizeof(EideticEntry) + vec(memory_kv) + vec(chunk_qsum) +
         [&] {
           size_t n = 0;
           for (const auto& head : retrieved)
             for (const RetrievedEntry& e : head) n += sizeof(int64_t) + e.kv.size() * sizeof(float);
           return n;
         }();
}

std::vector<std::string> Session::attach_store(const std::string& dir, int retrieve, bool synchronous) {
  check(retrieve >= 0 && retrieve <= kMaxRetrieve, "store: entries retrieved per chunk must be in [0, " +
                                                       std::to_string(kMaxRetrieve) + "], got " +
                                                       std::to_string(retrieve));
  const ModelConfig& cfg = model_->config();
  std::vector<std::string> notices;
  std::vector<std::shared_ptr<MemoryStore>> stores(cfg.layers.size());
  bool any = false;
  for (size_t l = 0; l < cfg.layers.size(); ++l) {
    if (!uses_eidetic_memory(cfg.layers[l], cfg)) continue;
    std::string notice;
    stores[l] = std::make_shared<MemoryStore>(dir + "/layer" + std::to_string(l) + ".bmstore", fingerprint_,
                                              cfg.kv_heads(), cfg.head_dim(), synchronous, &notice);
    if (!notice.empty()) notices.push_back(notice);
    any = true;
  }
  check(any, "store: this model has no B layer with an eidetic memory (k > 0, m > 0) to back with a store");
  stores_ = std::move(stores);
  retrieve_ = retrieve;
  return notices;
}

void Session::flush_stores() {
  for (auto& s : stores_)
    if (s) s->flush();
}

Session::Session(const Model& model) : model_(&model), fingerprint_(model.fingerprint()) {
  reset();
}

void Session::reset() {
  const ModelConfig& cfg = model_->config();
  const Dims d = dims_of(cfg);
  state_ = SessionState{};
  state_.layers.resize(cfg.layers.size());
  for (size_t l = 0; l < cfg.layers.size(); ++l) {
    LayerState& st = state_.layers[l];
    st.kind = cfg.layers[l];
    if (has_ssm_branch(st.kind, cfg)) st.ssm.reset(cfg, 1);
    if (layer_parts(st.kind, cfg).attention) st.kv.reset(2 * d.kvd, d.W);
    if (has_fading(st.kind, cfg)) st.kvf.reset(2 * d.kvd, 2 * d.W);
    if (uses_eidetic_memory(st.kind, cfg)) {
      st.y_prev.assign(d.D, 0.0f);
      st.chunk_scores.assign(d.W, 0.0f);
      st.chunk_kv.assign(static_cast<size_t>(d.W) * 2 * d.kvd, 0.0f);
      st.memory = EideticMemory(selection_rule_of(cfg));
      st.memory_kv.clear();
      st.chunk_qsum.assign(d.kvd, 0.0f);
      st.retrieved.assign(d.Hk, {});
    }
  }
}

size_t Session::state_bytes() const {
  size_t total = 0;
  for (const LayerState& st : state_.layers) total += st.bytes();
  return total;
}

void Session::feed(const int32_t* tokens, int64_t n, float* logits, bool all_logits, int64_t block) {
  const int V = model_->config().vocab_size;
  check(n >= 0, "feed: negative token count");
  for (int64_t i = 0; i < n; ++i)
    check(tokens[i] >= 0 && tokens[i] < V, "token " + std::to_string(tokens[i]) + " at prompt position " +
                                               std::to_string(i) + " is outside the vocabulary [0, " +
                                               std::to_string(V) + ")");
  if (block <= 0) block = std::max<int64_t>(n, 1);
  block = std::min<int64_t>(block, kMaxBlock);
  if (block > checked_block_) {
    check_fits_in_memory(estimate_inference_memory(model_->config(), block, state_.position + n).total(),
                         "streaming inference with prefill blocks of " + std::to_string(block) + " tokens");
    checked_block_ = block;
  }
  if (state_.position + n > kMaxPosition)
    fail("feed: the session would pass position " + std::to_string(kMaxPosition));
  for (int64_t s = 0; s < n; s += block) {
    const int64_t m = std::min(block, n - s);
    const bool last = s + m == n;
    float* out = nullptr;
    if (logits != nullptr && all_logits) out = logits + s * V;
    if (logits != nullptr && !all_logits && last) out = logits;
    forward_block(tokens + s, m, out, all_logits);
  }
}

void Session::forward_block(const int32_t* tokens, int64_t n, float* logits, bool all_logits) {
  const ModelConfig& cfg = model_->config();
  const ModelWeights& w = model_->weights();
  const int D = cfg.d_model, V = cfg.vocab_size, half = cfg.head_dim() / 2;
  pos0_ = state_.position;
  residual_.resize(n * D);
  xn_.resize(n * D);
  std::vector<float> rstd(n);
  embedding_forward(residual_.data(), tokens, w.embedding, n, D);
  rope_cos_.resize(n * half);
  rope_sin_.resize(n * half);
  for (int64_t i = 0; i < n; ++i)
    rope_angles(rope_cos_.data() + i * half, rope_sin_.data() + i * half, pos0_ + i, cfg.head_dim(),
                cfg.rope_base);

  for (size_t l = 0; l < cfg.layers.size(); ++l) {
    const LayerWeights& lw = w.layers[l];
    LayerState& st = state_.layers[l];
    rmsnorm_forward(xn_.data(), rstd.data(), residual_.data(), lw.norm1, n, D, cfg.norm_eps);
    if (lw.kind == 'M')
      mamba_layer_forward(residual_.data(), mamba_act_, xn_.data(), lw.mamba, cfg, 1, static_cast<int>(n),
                          false, &st.ssm);
    else
      attention_mixer(l, st, n);
    if (cfg.d_ff > 0) {
      const int F = cfg.d_ff;
      rmsnorm_forward(xn_.data(), rstd.data(), residual_.data(), lw.norm2, n, D, cfg.norm_eps);
      gate_up_.resize(n * 2 * F);
      act_.resize(n * F);
      linear_forward(gate_up_.data(), 2 * F, xn_.data(), D, lw.mlp.w_in, 2 * F, n, D, 2 * F);
      swiglu_forward(act_.data(), gate_up_.data(), n, F);
      linear_forward(residual_.data(), D, act_.data(), F, lw.mlp.w_out, D, n, F, D, 1.0f);
    }
  }
  final_.resize(n * D);
  rmsnorm_forward(final_.data(), rstd.data(), residual_.data(), w.norm_f, n, D, cfg.norm_eps);
  if (logits != nullptr) {
    if (all_logits)
      matmul(false, true, static_cast<int>(n), V, D, 1.0f, final_.data(), D, w.lm_head, D, 0.0f, logits, V);
    else
      matmul(false, true, 1, V, D, 1.0f, final_.data() + (n - 1) * D, D, w.lm_head, D, 0.0f, logits, V);
  }
  state_.position += n;
}

void Session::attention_mixer(size_t l, LayerState& st, int64_t n) {
  const ModelConfig& cfg = model_->config();
  const LayerWeights& lw = model_->weights().layers[l];
  const Dims d = dims_of(cfg);
  const int half = d.Dh / 2;
  const char kind = lw.kind;

  if (has_ssm_branch(kind, cfg)) {
    y_.assign(n * d.D, 0.0f);
    mamba_layer_forward(y_.data(), mamba_act_, xn_.data(), lw.mamba, cfg, 1, static_cast<int>(n), false,
                        &st.ssm);
  }
  qkv_.resize(n * d.width);
  linear_forward(qkv_.data(), d.width, xn_.data(), d.D, lw.attn.wqkv, d.width, n, d.D, d.width);
  const bool eidetic = uses_eidetic_memory(kind, cfg);
  const int qk = d.qd + d.kvd;
  if (eidetic) {
    qk_raw_.resize(n * qk);
    for (int64_t i = 0; i < n; ++i) std::memcpy(&qk_raw_[i * qk], &qkv_[i * d.width], sizeof(float) * qk);
  }
  for (int64_t i = 0; i < n; ++i) {
    float* row = qkv_.data() + i * d.width;
    rotate_row(row, d.H, d.Dh, &rope_cos_[i * half], &rope_sin_[i * half]);
    rotate_row(row + d.qd, d.Hk, d.Dh, &rope_cos_[i * half], &rope_sin_[i * half]);
  }
  st.kv.append(qkv_.data() + d.qd, d.width, n);

  if (has_fading(kind, cfg)) {
    const float* wf = cfg.tie_fading ? lw.attn.wqkv + d.qd : lw.bmojo.wkvf;
    const int ldw = cfg.tie_fading ? d.width : 2 * d.kvd;
    kvf_.resize(n * 2 * d.kvd);
    linear_forward(kvf_.data(), 2 * d.kvd, y_.data(), d.D, wf, ldw, n, d.D, 2 * d.kvd);
    for (int64_t i = 0; i < n; ++i)
      rotate_row(kvf_.data() + i * 2 * d.kvd, d.Hk, d.Dh, &rope_cos_[i * half], &rope_sin_[i * half]);
    st.kvf.append(kvf_.data(), 2 * d.kvd, n);
  }

  out_.resize(n * d.qd);
  if (!eidetic) {
    attend(st, pos0_, pos0_ + n, qkv_.data(), nullptr, out_.data());
  } else {
    // Innovation scores s_t = |x_t - y_{t-1} P|^2 / D, y_{t-1} carried across blocks.
    err_.assign(xn_.begin(), xn_.begin() + n * d.D);
    yshift_.resize(n * d.D);
    std::memcpy(yshift_.data(), st.y_prev.data(), sizeof(float) * d.D);
    if (n > 1) std::memcpy(yshift_.data() + d.D, y_.data(), sizeof(float) * (n - 1) * d.D);
    matmul(false, false, static_cast<int>(n), d.D, d.D, -1.0f, yshift_.data(), d.D, lw.bmojo.innovation, d.D,
           1.0f, err_.data(), d.D);
    scores_.resize(n);
    for (int64_t i = 0; i < n; ++i) {
      double s = 0.0;
      for (int c = 0; c < d.D; ++c) s += static_cast<double>(err_[i * d.D + c]) * err_[i * d.D + c];
      scores_[i] = static_cast<float>(s / d.D);
    }
    std::memcpy(st.y_prev.data(), y_.data() + (n - 1) * d.D, sizeof(float) * d.D);

    // Queries of one chunk read the memory as it stands; a completed chunk is promoted before the next.
    for (int64_t t = pos0_; t < pos0_ + n;) {
      const int64_t seg_end = std::min(pos0_ + n, (t / d.W + 1) * d.W);
      const int64_t i0 = t - pos0_;
      attend(st, t, seg_end, qkv_.data() + i0 * d.width, qk_raw_.data() + i0 * qk, out_.data() + i0 * d.qd);
      for (int64_t p = t; p < seg_end; ++p) {
        const int64_t i = p - pos0_, slot = p % d.W;
        st.chunk_scores[slot] = scores_[i];
        float* dst = st.chunk_kv.data() + slot * 2 * d.kvd;
        std::memcpy(dst, qk_raw_.data() + i * qk + d.qd, sizeof(float) * d.kvd);
        std::memcpy(dst + d.kvd, qkv_.data() + i * d.width + d.qd + d.kvd, sizeof(float) * d.kvd);
        const int group = d.H / d.Hk;
        for (int h = 0; h < d.H; ++h) {
          const float* qh = qk_raw_.data() + i * qk + h * d.Dh;
          float* sum = st.chunk_qsum.data() + (h / group) * d.Dh;
          for (int c = 0; c < d.Dh; ++c) sum[c] += qh[c];
        }
      }
      if (seg_end % d.W == 0) {
        const MemoryStore* store = l < stores_.size() ? stores_[l].get() : nullptr;
        promote_chunk(st, seg_end - d.W, stores_.empty() ? nullptr : stores_[l].get());
        if (store != nullptr) {
          const float inv = 1.0f / static_cast<float>(d.W * (d.H / d.Hk));
          for (float& v : st.chunk_qsum) v *= inv;
          st.retrieved = store->retrieve(st.chunk_qsum.data(), retrieve_);
        }
        std::fill(st.chunk_qsum.begin(), st.chunk_qsum.end(), 0.0f);
      }
      t = seg_end;
    }
  }
  linear_forward(residual_.data(), d.D, out_.data(), d.qd, lw.attn.wo, d.D, n, d.qd, d.D, 1.0f);
}

// Queries t0..t1-1 (rows of q with stride `width`, unrotated rows of q_raw for the eidetic scores). Blocks
// of up to 64 queries and one head: the scores against the block's key span (window, fading, eidetic,
// retrieved) are one matrix product, masked per query, then one softmax and products with the values.
void Session::attend(const LayerState& st, int64_t t0, int64_t t1, const float* q, const float* q_raw,
                     float* out) const {
  const ModelConfig& cfg = model_->config();
  const Dims d = dims_of(cfg);
  const int group = d.H / d.Hk;
  const int ld = 2 * d.kvd;  // row stride of the key/value buffers and the memory
  const int qk = d.qd + d.kvd;
  const float scale = 1.0f / std::sqrt(static_cast<float>(d.Dh));
  const bool fading = has_fading(st.kind, cfg);
  const std::vector<EideticEntry>* entries = q_raw != nullptr ? &st.memory.entries() : nullptr;
  constexpr int64_t kBlock = 64;
  const int64_t nq = t1 - t0, blocks = (nq + kBlock - 1) / kBlock;
  // Keys a query reads: the window, the fading span, the memory and what was retrieved (full span: all).
  const double span = d.W > 0 ? 3.0 * d.W + cfg.eidetic_capacity + 64 : static_cast<double>(t1);
  ParallelErrors errors;
#pragma omp parallel if (parallel_worth(static_cast <double>(nq) * d.H * d.Dh * span))
  {
    std::vector<float> S;
#pragma omp for collapse(2) schedule(dynamic)
    for (int64_t blk = 0; blk < blocks; ++blk)
      for (int h = 0; h < d.H; ++h) {
        errors.guard([&] {
          const int64_t a = t0 + blk * kBlock, b = std::min(t1, a + kBlock), nb = b - a;
          const int g = h / group;
          const float* qb = q + (a - t0) * d.width + h * d.Dh;
          // Column spans: window keys [wlo, b), fading keys [flo, fend), eidetic entries [0, ne), retrieved.
          const int64_t wlo = d.W > 0 ? std::max<int64_t>(0, a - d.W + 1) : 0, nw = b - wlo;
          const int64_t flo = std::max<int64_t>(0, a - 2 * d.W + 1);
          const int64_t nf = fading ? std::max<int64_t>(0, (b - d.W) - flo) : 0;
          int64_t ne = 0;
          if (entries != nullptr)
            while (ne < static_cast<int64_t>(entries->size()) && (*entries)[ne].position <= b - 1 - d.W) ++ne;
          const std::vector<RetrievedEntry>* fetched =
              q_raw != nullptr && !st.retrieved.empty() && !st.retrieved[g].empty() ? &st.retrieved[g]
                                                                                    : nullptr;
          const int64_t nr = fetched != nullptr ? static_cast<int64_t>(fetched->size()) : 0;
          const int64_t cols = nw + nf + ne + nr;
          S.resize(nb * cols);
          float* Sw = S.data();
          matmul(false, true, static_cast<int>(nb), static_cast<int>(nw), d.Dh, scale, qb, d.width,
                 st.kv.row(wlo) + g * d.Dh, ld, 0.0f, Sw, static_cast<int>(cols));
          if (nf > 0)
            matmul(false, true, static_cast<int>(nb), static_cast<int>(nf), d.Dh, scale, qb, d.width,
                   st.kvf.row(flo) + g * d.Dh, ld, 0.0f, Sw + nw, static_cast<int>(cols));
          const float* qr = q_raw != nullptr ? q_raw + (a - t0) * qk + h * d.Dh : nullptr;
          if (ne > 0)
            matmul(false, true, static_cast<int>(nb), static_cast<int>(ne), d.Dh, scale, qr, qk,
                   st.memory_kv.data() + g * d.Dh, ld, 0.0f, Sw + nw + nf, static_cast<int>(cols));
          for (int64_t i = 0; i < nb && nr > 0; ++i)
            for (int64_t e = 0; e < nr; ++e)
              Sw[i * cols + nw + nf + ne + e] = dot(qr + i * qk, (*fetched)[e].kv.data(), d.Dh) * scale;
          // Mask what query t may not read, then softmax each row (masked weights are exactly 0).
          for (int64_t i = 0; i < nb; ++i) {
            const int64_t t = a + i;
            float* row = Sw + i * cols;
            const auto visible = [&](int64_t c) {
              if (c < nw) return wlo + c <= t && (d.W == 0 || wlo + c >= t - d.W + 1);
              if (c < nw + nf) {
                const int64_t p = flo + (c - nw);
                return p >= t - 2 * d.W + 1 && p <= t - d.W;
              }
              if (c < nw + nf + ne) return (*entries)[c - nw - nf].position <= t - d.W;
              return (*fetched)[c - nw - nf - ne].position <= t - d.W;
            };
            float mx = -std::numeric_limits<float>::infinity();
            for (int64_t c = 0; c < cols; ++c)
              if (visible(c)) mx = std::max(mx, row[c]);
            float sum = 0.0f;
            for (int64_t c = 0; c < cols; ++c) {
              row[c] = visible(c) ? std::exp(row[c] - mx) : 0.0f;
              sum += row[c];
            }
            const float inv = 1.0f / sum;
            for (int64_t c = 0; c < cols; ++c) row[c] *= inv;
          }
          float* ob = out + (a - t0) * d.qd + h * d.Dh;
          matmul(false, false, static_cast<int>(nb), d.Dh, static_cast<int>(nw), 1.0f, Sw,
                 static_cast<int>(cols), st.kv.row(wlo) + d.kvd + g * d.Dh, ld, 0.0f, ob, d.qd);
          if (nf > 0)
            matmul(false, false, static_cast<int>(nb), d.Dh, static_cast<int>(nf), 1.0f, Sw + nw,
                   static_cast<int>(cols), st.kvf.row(flo) + d.kvd + g * d.Dh, ld, 1.0f, ob, d.qd);
          if (ne > 0)
            matmul(false, false, static_cast<int>(nb), d.Dh, static_cast<int>(ne), 1.0f, Sw + nw + nf,
                   static_cast<int>(cols), st.memory_kv.data() + d.kvd + g * d.Dh, ld, 1.0f, ob, d.qd);
          for (int64_t i = 0; i < nb && nr > 0; ++i)
            for (int64_t e = 0; e < nr; ++e) {
              const float p = Sw[i * cols + nw + nf + ne + e];
              const float* v = (*fetched)[e].kv.data() + d.Dh;
              for (int c = 0; c < d.Dh; ++c) ob[i * d.qd + c] += p * v[c];
            }
        });
      }
  }
  errors.rethrow();
}

void Session::promote_chunk(LayerState& st, int64_t chunk_start, MemoryStore* store) const {
  const Dims d = dims_of(model_->config());
  const int row = 2 * d.kvd;
  const std::vector<EideticEntry> before = st.memory.entries();
  const std::vector<float> before_kv = st.memory_kv;
  std::vector<EideticEntry> evicted;
  st.memory.promote_chunk(st.chunk_scores.data(), chunk_start, &evicted);
  // Evicted entries go to the store: their rows come from the old memory or, if promoted and evicted at
  // once, from the chunk.
  if (store != nullptr)
    for (const EideticEntry& e : evicted) {
      const float* src = nullptr;
      if (e.position >= chunk_start) {
        src = st.chunk_kv.data() + (e.position - chunk_start) * row;
      } else {
        const auto it = std::lower_bound(before.begin(), before.end(), e.position,
                                         [](const EideticEntry& a, int64_t p) { return a.position < p; });
        src = before_kv.data() + (it - before.begin()) * row;
      }
      store->add(e.position, e.score, src);
    }
  const std::vector<EideticEntry>& after = st.memory.entries();
  st.memory_kv.resize(after.size() * row);
  size_t old = 0;
  for (size_t e = 0; e < after.size(); ++e) {
    const int64_t p = after[e].position;
    const float* src = nullptr;
    if (p >= chunk_start) {
      src = st.chunk_kv.data() + (p - chunk_start) * row;
    } else {
      while (old < before.size() && before[old].position < p) ++old;
      src = before_kv.data() + old * row;
    }
    std::memcpy(st.memory_kv.data() + e * row, src, sizeof(float) * row);
  }
}

void Session::save(const std::string& path) const {
  require_replaceable(path, "state file");
  Writer w;
  w.bytes().append(kStateMagic, sizeof(kStateMagic));
  w.put<uint32_t>(kStateVersion);
  w.put<uint64_t>(fingerprint_);
  w.put<int64_t>(state_.position);
  w.put<uint32_t>(static_cast<uint32_t>(state_.layers.size()));
  for (const LayerState& st : state_.layers) {
    w.put<char>(st.kind);
    w.floats(st.ssm.conv.data(), st.ssm.conv.size());
    w.floats(st.ssm.ssm.data(), st.ssm.ssm.size());
    for (const PositionRows* r : {&st.kv, &st.kvf}) {
      // Only the rows a future query can read: the last `keep` (all of them for a full-span cache).
      const int64_t from = r->keep > 0 ? std::max(r->first, r->end() - r->keep) : r->first;
      w.put<int64_t>(from);
      w.floats(r->width ? r->row(from) : nullptr, static_cast<size_t>(r->end() - from) * r->width);
    }
    w.floats(st.y_prev.data(), st.y_prev.size());
    w.floats(st.chunk_scores.data(), st.chunk_scores.size());
    w.floats(st.chunk_kv.data(), st.chunk_kv.size());
    w.put<uint64_t>(st.memory.entries().size());
    for (const EideticEntry& e : st.memory.entries()) {
      w.put<int64_t>(e.position);
      w.put<float>(e.score);
    }
    w.floats(st.memory_kv.data(), st.memory_kv.size());
    w.floats(st.chunk_qsum.data(), st.chunk_qsum.size());
    w.put<uint64_t>(st.retrieved.size());
    for (const auto& head : st.retrieved) {
      w.put<uint64_t>(head.size());
      for (const RetrievedEntry& e : head) {
        w.put<int64_t>(e.position);
        w.floats(e.kv.data(), e.kv.size());
      }
    }
  }
  const uint64_t sum = fnv1a64(w.bytes().data(), w.bytes().size());
  w.put<uint64_t>(sum);
  write_file_atomic(path, w.bytes(), "state file");
}

void Session::load(const std::string& path) {
  const std::string bytes = read_file(path, "state file");
  const std::string where = "state file '" + path + "'";
  check(bytes.size() >= sizeof(kStateMagic) + 8 &&
            std::memcmp(bytes.data(), kStateMagic, sizeof(kStateMagic)) == 0,
        where + " is not a bmojo inference state");
  uint64_t stored_sum = 0;
  std::memcpy(&stored_sum, bytes.data() + bytes.size() - 8, 8);
  check(fnv1a64(bytes.data(), bytes.size() - 8) == stored_sum,
        where + " is truncated or corrupted (checksum mismatch)");
  const std::string body = bytes.substr(0, bytes.size() - 8);
  Reader r(body, path);
  for (size_t i = 0; i < sizeof(kStateMagic); ++i) r.get<char>();
  const uint32_t version = r.get<uint32_t>();
  check(version == kStateVersion, where + " has format version " + std::to_string(version) +
                                      ", this build reads " + std::to_string(kStateVersion));
  check(r.get<uint64_t>() == fingerprint_,
        where + " was saved by a different model (config or weights differ from the loaded checkpoint)");
  const ModelConfig& cfg = model_->config();
  const Dims d = dims_of(cfg);
  SessionState loaded;
  loaded.position = r.get<int64_t>();
  check(loaded.position >= 0 && loaded.position < kMaxPosition,
        where + ": position " + std::to_string(loaded.position) + " is out of range");
  const uint32_t layers = r.get<uint32_t>();
  check(layers == cfg.layers.size(), where + " holds " + std::to_string(layers) + " layers, the model has " +
                                         std::to_string(cfg.layers.size()));
  // Start from the empty state of this model: it fixes every buffer's shape, the file fills them.
  Session fresh(*model_);
  loaded.layers = fresh.state_.layers;
  for (uint32_t l = 0; l < layers; ++l) {
    LayerState& st = loaded.layers[l];
    const std::string layer = "layer " + std::to_string(l);
    check(r.get<char>() == st.kind, where + ": " + layer + " is of another kind than the model's");
    st.ssm.conv = r.floats(static_cast<int64_t>(st.ssm.conv.size()), layer + " conv state");
    st.ssm.ssm = r.floats(static_cast<int64_t>(st.ssm.ssm.size()), layer + " scan state");
    for (PositionRows* rows : {&st.kv, &st.kvf}) {
      // Exactly the rows save() writes: the last min(keep, position) positions (every position for a
      // full-span cache), ending at the state's position. Fewer would let attention read before the buffer.
      const int64_t first = r.get<int64_t>();
      const int64_t want = rows->width == 0 ? 0
                           : rows->keep > 0 ? std::min<int64_t>(rows->keep, loaded.position)
                                            : loaded.position;
      const uint64_t max_values = static_cast<uint64_t>(want) * static_cast<uint64_t>(rows->width);
      std::vector<float> v = r.floats(-1, layer + " key/value rows", max_values);
      check(v.size() == max_values && (rows->width == 0 || first == loaded.position - want),
            where + ": " + layer + " key/value rows do not match the state's position (" +
                std::to_string(want) + " rows ending at position " + std::to_string(loaded.position) +
                " expected)");
      rows->first = rows->width == 0 ? 0 : first;
      rows->count = want;
      rows->data = std::move(v);
    }
    st.y_prev = r.floats(static_cast<int64_t>(st.y_prev.size()), layer + " previous SSM output");
    st.chunk_scores = r.floats(static_cast<int64_t>(st.chunk_scores.size()), layer + " chunk scores");
    st.chunk_kv = r.floats(static_cast<int64_t>(st.chunk_kv.size()), layer + " chunk keys");
    const uint64_t entries = r.get<uint64_t>();
    const bool eidetic = uses_eidetic_memory(st.kind, cfg);
    check(entries == 0 || (eidetic && entries <= static_cast<uint64_t>(cfg.eidetic_capacity)),
          where + ": " + layer + " holds " + std::to_string(entries) + " eidetic entries, more than m");
    std::vector<EideticEntry> list(entries);
    for (auto& e : list) {
      e.position = r.get<int64_t>();
      e.score = r.get<float>();
    }
    // Entries come from complete chunks only: positions before the current chunk's start.
    const int64_t chunk_start = d.W > 0 ? loaded.position / d.W * d.W : 0;
    for (size_t i = 0; i < list.size(); ++i)
      check(list[i].position >= 0 && list[i].position < chunk_start && std::isfinite(list[i].score) &&
                (i == 0 || list[i - 1].position < list[i].position),
            where + ": " + layer + " eidetic entries are not ascending positions of completed chunks");
    st.memory.set_entries(std::move(list));
    st.memory_kv = r.floats(static_cast<int64_t>(entries * 2 * d.kvd), layer + " eidetic keys");
    st.chunk_qsum = r.floats(static_cast<int64_t>(st.chunk_qsum.size()), layer + " chunk query sum");
    const uint64_t heads = r.get<uint64_t>();
    check(heads == st.retrieved.size(), where + ": " + layer + " retrieved entries for " +
                                            std::to_string(heads) + " KV heads, the model has " +
                                            std::to_string(st.retrieved.size()));
    for (auto& head : st.retrieved) {
      const uint64_t count = r.get<uint64_t>();
      check(count <= static_cast<uint64_t>(kMaxRetrieve),
            where + ": " + layer + " holds " + std::to_string(count) +
                " retrieved entries for a KV head, more than " + std::to_string(kMaxRetrieve));
      head.resize(count);
      for (RetrievedEntry& e : head) {
        e.position = r.get<int64_t>();
        check(e.position >= -1 && e.position < loaded.position,
              where + ": " + layer + " retrieved entry at position " + std::to_string(e.position) +
                  " is not of the past");
        e.kv = r.floats(2 * d.Dh, layer + " retrieved entry");
      }
    }
  }
  check(r.at() == body.size(),
        where + " has " + std::to_string(body.size() - r.at()) + " unexpected trailing bytes");
  state_ = std::move(loaded);
}

}  // namespace bmojo
