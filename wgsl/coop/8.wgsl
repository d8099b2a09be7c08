// 8x8 cooperative matrices: f16 inputs, f32 accumulators (Metal simdgroup matrices).
// Defines: CoopA, CoopB, CoopC.

alias CoopA = coop_mat8x8<f16, A>;
alias CoopB = coop_mat8x8<f16, B>;
alias CoopC = coop_mat8x8<f32, C>;
