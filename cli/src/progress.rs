//! Progress on stderr: live bars on a terminal, plain lines, or JSON lines.

use std::io::{IsTerminal, Write};
use std::sync::Mutex;
use std::time::Duration;

use indicatif::{MultiProgress, ProgressBar, ProgressStyle};
use serde_json::json;
use strata_engine::solve::{Event, Progress};

use crate::args::ProgressMode;

/// The live display: one spinner per running step (platform, stage, step).
type Bars = (MultiProgress, Mutex<Vec<(StepId, ProgressBar)>>);
type StepId = (Option<String>, usize, usize);

pub struct Reporter {
    label: Option<String>,
    mode: ProgressMode,
    explain: bool,
    bars: Option<Bars>,
}

impl Reporter {
    pub fn new(mode: ProgressMode, explain: bool) -> Reporter {
        let mode = match mode {
            ProgressMode::Auto if std::io::stderr().is_terminal() => ProgressMode::Auto,
            ProgressMode::Auto => ProgressMode::Plain,
            m => m,
        };
        let bars =
            (mode == ProgressMode::Auto).then(|| (MultiProgress::new(), Mutex::new(Vec::new())));
        Reporter {
            label: None,
            mode,
            explain,
            bars,
        }
    }

    /// Prefixes every line with `[label] ` (a workspace build names the image).
    pub fn with_label(mut self, label: Option<&str>) -> Reporter {
        self.label = label.map(str::to_string);
        self
    }

    fn line(&self, s: &str) {
        self.line_for(None, s)
    }

    /// A line of the build for `platform` (one of several): `[label] [platform] …`.
    fn line_for(&self, platform: Option<&str>, s: &str) {
        let labelled;
        let s = match (self.label.as_deref(), platform) {
            _ if self.mode == ProgressMode::Json => s,
            (Some(l), Some(p)) => {
                labelled = format!("[{l}] [{p}] {s}");
                labelled.as_str()
            }
            (Some(l), None) | (None, Some(l)) => {
                labelled = format!("[{l}] {s}");
                labelled.as_str()
            }
            (None, None) => s,
        };
        match &self.bars {
            Some((mp, _)) => {
                let _ = mp.println(s);
            }
            None => {
                let mut e = std::io::stderr().lock();
                let _ = writeln!(e, "{s}");
            }
        }
    }

    /// One JSON event line; a workspace build's names its image (`"image"`), since the images'
    /// lines interleave.
    fn json_line(&self, mut v: serde_json::Value) {
        if let (Some(l), Some(o)) = (&self.label, v.as_object_mut()) {
            o.insert("image".into(), json!(l));
        }
        self.line(&v.to_string());
    }

    /// The summary line; `reused`: RUN steps reused by read set (named only when some were).
    pub fn finish(&self, executed: usize, cached: usize, reused: usize, took: Duration) {
        match self.mode {
            ProgressMode::Json => self.json_line(json!({"event": "done", "executed": executed, "cached": cached, "reused": reused, "duration_ms": took.as_millis() as u64})),
            _ => {
                let reused = if reused > 0 {
                    format!(", {reused} reused by read set")
                } else {
                    String::new()
                };
                self.line(&format!(
                    "done: {executed} steps executed, {cached} cached{reused}, in {:.2}s",
                    took.as_secs_f64()
                ))
            }
        }
    }
}

fn secs(d: Duration) -> String {
    format!("{:.2}s", d.as_secs_f64())
}

impl Progress for Reporter {
    fn event(&self, e: &Event) {
        self.event_for(None, e)
    }

    fn platform_event(&self, platform: &str, e: &Event) {
        self.event_for(Some(platform), e)
    }
}

impl Reporter {
    fn event_for(&self, platform: Option<&str>, e: &Event) {
        match self.mode {
            ProgressMode::Json => {
                let v = match e {
                    Event::StageStart { stage, name, steps } => {
                        json!({"event": "stage", "stage": stage, "name": name, "steps": steps})
                    }
                    Event::StepStart { stage, step, text } => {
                        json!({"event": "step-start", "stage": stage, "step": step, "instruction": text})
                    }
                    Event::StepDone {
                        stage,
                        step,
                        text,
                        status,
                        key,
                        duration,
                        layer_bytes,
                        explain,
                    } => json!({
                        "event": "step", "stage": stage, "step": step, "instruction": text, "status": status.as_str(),
                        "key": key, "duration_ms": duration.as_millis() as u64, "layer_bytes": layer_bytes, "explain": explain,
                    }),
                    Event::Hashing {
                        stage,
                        step,
                        files,
                        hashed,
                        bytes_hashed,
                    } => {
                        json!({"event": "hashing", "stage": stage, "step": step, "files": files, "hashed": hashed, "bytes_hashed": bytes_hashed})
                    }
                    Event::Compressed {
                        stage,
                        step,
                        compressed,
                        reused,
                    } => {
                        json!({"event": "compressed", "stage": stage, "step": step, "bytes_compressed": compressed, "bytes_reused": reused})
                    }
                    Event::RunCost { stage, step, cost } => {
                        let ms: serde_json::Map<String, serde_json::Value> = cost
                            .phases()
                            .iter()
                            .map(|(n, d)| {
                                let ms = (d.as_secs_f64() * 1e5).round() / 100.0;
                                (n.to_string(), json!(ms))
                            })
                            .collect();
                        json!({"event": "run-cost", "stage": stage, "step": step, "ms": ms})
                    }
                    Event::Warning(w) => json!({"event": "warning", "message": w}),
                    Event::Exported { kind, dest } => {
                        json!({"event": "exported", "type": kind, "dest": dest})
                    }
                };
                let mut v = v;
                if let Some(p) = platform {
                    v["platform"] = p.into();
                }
                self.json_line(v);
            }
            ProgressMode::Plain | ProgressMode::Auto => {
                let plain = |s: String| self.line_for(platform, &s);
                let id = |stage: usize, step: usize| (platform.map(str::to_string), stage, step);
                match e {
                    Event::StageStart { stage, name, steps } => {
                        if self.bars.is_none() {
                            plain(format!(
                                "#{stage} stage {}({steps} steps)",
                                name.as_ref().map(|n| format!("{n} ")).unwrap_or_default()
                            ))
                        }
                    }
                    Event::StepStart { stage, step, text } => {
                        if let Some((mp, bars)) = &self.bars {
                            let pb = mp.add(ProgressBar::new_spinner());
                            pb.set_style(
                                ProgressStyle::with_template("{spinner} {msg} {elapsed}").unwrap(),
                            );
                            let at = platform.map(|p| format!("[{p}] ")).unwrap_or_default();
                            pb.set_message(format!("{at}#{stage}.{} {text}", step + 1));
                            pb.enable_steady_tick(Duration::from_millis(100));
                            bars.lock().unwrap().push((id(*stage, *step), pb));
                        }
                    }
                    Event::StepDone {
                        stage,
                        step,
                        text,
                        status,
                        duration,
                        explain,
                        ..
                    } => {
                        let tag = match status {
                            strata_engine::solve::StepStatus::Cached => "CACHED".to_string(),
                            strata_engine::solve::StepStatus::Reused => "REUSED".to_string(),
                            strata_engine::solve::StepStatus::Executed => {
                                format!("DONE {}", secs(*duration))
                            }
                        };
                        let msg = format!("#{stage}.{} {tag} {text}", step + 1);
                        if let Some((_, bars)) = &self.bars {
                            let mut bars = bars.lock().unwrap();
                            if let Some(i) = bars.iter().position(|(k, _)| *k == id(*stage, *step))
                            {
                                let (_, pb) = bars.remove(i);
                                pb.finish_and_clear();
                            }
                        }
                        plain(msg);
                        // A reused step always says why it did not run.
                        if self.explain || *status == strata_engine::solve::StepStatus::Reused {
                            for r in explain {
                                plain(format!("    why: {r}"));
                            }
                        }
                    }
                    Event::Hashing { .. } | Event::Compressed { .. } | Event::RunCost { .. } => {}
                    Event::Warning(w) => plain(format!("warning: {w}")),
                    Event::Exported { kind, dest } => plain(format!("exported {kind} to {dest}")),
                }
            }
        }
    }
}
