//! docs/tour.md cannot drift from the tool: every block that follows a
//! `<!-- sabai ARGS -->` line is what `sabai ARGS` prints (stdout, then
//! stderr), byte for byte. `PORT` in ARGS is a `sabai serve --once` started
//! for the block; `<<< TEXT` is stdin (`\n` for a newline).
//! `SABAI_BLESS=1` rewrites the blocks instead of comparing.

mod support;

use support::{run, text, without_port, Server};

const TOUR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/tour.md");

/// What `marker` prints now.
fn output_of(marker: &str) -> String {
    let (args, stdin) = match marker.split_once(" <<< ") {
        Some((args, stdin)) => (args, stdin.replace("\\n", "\n")),
        None => (marker, String::new()),
    };
    let server = args.contains("PORT").then(|| Server::start(&["--once"]));
    let port = server.as_ref().map(|s| s.port.to_string()).unwrap_or_default();
    let args: Vec<String> = args.split_whitespace().map(|a| a.replace("PORT", &port)).collect();
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let out = run(&args, &stdin);
    let all = format!("{}{}", text(&out.stdout), text(&out.stderr));
    match server {
        Some(server) => without_port(&all, server.port),
        None => all,
    }
}

#[test]
fn every_block_in_the_tour_is_what_the_tool_prints() {
    let tour = std::fs::read_to_string(TOUR).unwrap();
    let bless = std::env::var_os("SABAI_BLESS").is_some();
    let mut rewritten = String::new();
    let mut lines = tour.split_inclusive('\n');
    let mut checked = 0;
    let mut failures = Vec::new();
    while let Some(line) = lines.next() {
        rewritten.push_str(line);
        let Some(marker) = line.trim().strip_prefix("<!-- sabai ").and_then(|l| l.strip_suffix(" -->"))
        else {
            continue;
        };
        let fence = lines.next().unwrap_or_default();
        assert_eq!(fence.trim(), "```text", "a block must follow <!-- sabai {marker} -->");
        let mut shown = String::new();
        for body in lines.by_ref() {
            if body.trim_end() == "```" {
                break;
            }
            shown.push_str(body);
        }
        let now = output_of(marker);
        if now != shown {
            failures.push(format!("sabai {marker}\n--- in the tour\n{shown}--- printed now\n{now}"));
        }
        rewritten.push_str(fence);
        rewritten.push_str(&now);
        rewritten.push_str("```\n");
        checked += 1;
    }
    if bless {
        std::fs::write(TOUR, rewritten).unwrap();
        return;
    }
    assert!(checked >= 10, "only {checked} blocks checked");
    assert!(failures.is_empty(), "the tour drifted (SABAI_BLESS=1 rewrites it):\n{}", failures.join("\n"));
}
