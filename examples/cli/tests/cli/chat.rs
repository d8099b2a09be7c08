//! `moetile chat` through a scripted stdin.

use crate::{model_arg, moetile};

/// Runs a chat of `script` on the CPU reference; every answer is 6 tokens, even where the
/// random model's greedy pick is an end-of-turn token (`--ignore-eos`).
fn chat(script: &str) -> (String, Vec<String>) {
    let out = moetile()
        .args(["chat", "--cpu", "-m", model_arg(), "-n", "6", "--temp", "0"])
        .arg("--ignore-eos")
        .write_stdin(script)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "{stderr}");
    let summaries = stderr
        .lines()
        .filter(|l| l.starts_with("[prompt"))
        .map(str::to_string)
        .collect();
    (String::from_utf8(out.stdout).unwrap(), summaries)
}

/// `(prompt tokens, reused tokens)` of a turn's summary line.
fn counts(summary: &str) -> (usize, usize) {
    let words: Vec<&str> = summary.split([' ', '(']).collect();
    let prompt = words[1].parse().unwrap();
    let reused = words[4].parse().unwrap();
    (prompt, reused)
}

#[test]
fn two_turns_reuse_the_cache_reset_starts_over_quit_leaves() {
    let (stdout, turns) = chat("Hello there\nTell me more\n/reset\nHello there\n/quit\nignored\n");
    assert_eq!(turns.len(), 3, "{turns:?}");
    let (first, first_reused) = counts(&turns[0]);
    let (second, second_reused) = counts(&turns[1]);
    let (third, third_reused) = counts(&turns[2]);
    assert_eq!(first_reused, 0);
    // The second turn resends the first: at least the first turn's prompt is reused.
    assert!(second > first && second_reused >= first, "{turns:?}");
    // After /reset the conversation and the cache are empty again.
    assert_eq!((third, third_reused), (first, 0), "{turns:?}");
    // "ignored" after /quit was never answered (three turns above), and each turn answered
    // (its tokens may be special ones a random model favours, which print as nothing).
    assert!(
        turns.iter().all(|t| t.contains("generated 6 tokens")),
        "{turns:?}\n{stdout}"
    );
}

#[test]
fn end_of_input_ends_the_chat() {
    let (_, turns) = chat("Hi");
    assert_eq!(turns.len(), 1);
}

/// Ctrl-C (SIGINT) during an answer stops that answer; the chat reads the next line.
#[cfg(unix)]
#[test]
fn ctrl_c_stops_the_answer_and_the_chat_goes_on() {
    use std::io::{Read, Write};
    use std::process::{Command, Stdio};

    let mut child = Command::new(assert_cmd::cargo::cargo_bin("moetile"))
        .args(["chat", "--cpu", "-m", model_arg(), "--ignore-eos"])
        .args(["-n", "1000000", "--ctx", "32768"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    writeln!(stdin, "Tell me a long story").unwrap();
    // The first byte of the answer: generation runs and the handler is installed.
    let mut stdout = child.stdout.take().unwrap();
    let mut first = [0u8; 1];
    stdout.read_exact(&mut first).unwrap();
    let killed = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    writeln!(stdin, "/quit").unwrap();
    drop(stdin);
    let mut rest = Vec::new();
    stdout.read_to_end(&mut rest).unwrap();
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{:?}: {stderr}", out.status);
    assert!(stderr.contains("| stopped"), "{stderr}");
}
