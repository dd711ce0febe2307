#include "model/flops.hpp"

#include <algorithm>

namespace bmojo {

double forward_flops_per_token(const ModelConfig& c, int T, double head_fraction) {
  const double D = c.d_model, H = c.n_heads, Hk = c.kv_heads(), Dh = c.head_dim();
  const double C = c.d_inner(), R = c.resolved_dt_rank(), N = c.d_state;
  // Average number of keys a query attends.
  double keys = 0.0, fading = 0.0;
  for (int t = 0; t < T; ++t) {
    keys += c.window > 0 ? std::min(t + 1, c.window) : t + 1;
    if (c.window > 0) fading += std::max(0, std::min(c.window, t - c.window + 1));
  }
  keys /= T;
  fading /= T;
  // Eidetic entries a query reads at most (the memory fills up after m / k chunks).
  const double eidetic =
      std::min<double>(c.eidetic_capacity, c.eidetic_per_chunk * (T / std::max(1, c.window)));
  double total = 0.0;
  for (char kind : c.layers) {
    const LayerParts parts = layer_parts(kind, c);
    if (parts.attention) {
      total += 2.0 * D * (H + 2.0 * Hk) * Dh + 2.0 * H * Dh * D;  // projections
      total += 4.0 * H * Dh * keys;                               // scores and weighted values
    }
    if (parts.fading) total += 2.0 * D * 2.0 * Hk * Dh + 4.0 * H * Dh * fading;  // fading projections, keys
    if (parts.innovation) total += 2.0 * D * D;                                  // predictor
    if (parts.eidetic) total += 4.0 * H * Dh * eidetic;                          // eidetic keys
    if (parts.ssm) {
      total += 2.0 * D * 2.0 * C + 2.0 * C * (R + 2.0 * N) + 2.0 * R * C + 2.0 * C * D;  // projections
      total += 2.0 * c.d_conv * C + 6.0 * C * N;  // conv; scan update and readout
    }
    if (parts.mlp) total += 2.0 * D * 2.0 * c.d_ff + 2.0 * c.d_ff * D;
  }
  total += 2.0 * D * c.vocab_size * head_fraction;
  return total;
}

}  // namespace bmojo
