// 16x16 cooperative matrices: f16 inputs, f32 accumulators (NVIDIA/AMD Vulkan).
// Defines: CoopA, CoopB, CoopC.

alias CoopA = coop_mat16x16<f16, A>;
alias CoopB = coop_mat16x16<f16, B>;
alias CoopC = coop_mat16x16<f32, C>;
