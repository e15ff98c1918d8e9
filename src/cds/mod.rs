pub mod codex;
