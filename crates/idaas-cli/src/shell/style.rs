//! Colours and progress bars: on for a person at a terminal, off for pipes, files, `--json` and `NO_COLOR`.

use std::io::IsTerminal;

/// What the output may decorate.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Style {
    /// ANSI colours on standard output.
    pub color: bool,
    /// Progress bars on standard error.
    pub progress: bool,
}

impl Style {
    /// Colours when standard output is a terminal and `NO_COLOR` is unset or empty; progress bars when
    /// standard error is a terminal; neither with `--json`.
    pub fn detect(json: bool) -> Style {
        let no_color = std::env::var_os("NO_COLOR").is_some_and(|v| !v.is_empty());
        Style {
            color: !json && !no_color && std::io::stdout().is_terminal(),
            progress: !json && std::io::stderr().is_terminal(),
        }
    }

    fn paint(&self, code: &str, text: &str) -> String {
        if self.color { format!("\x1b[{code}m{text}\x1b[0m") } else { text.to_owned() }
    }

    /// `error: <message>`.
    pub fn error(&self, message: &str) -> String {
        format!("{} {message}\n", self.paint("1;31", "error:"))
    }

    /// `note: <message>`.
    pub fn note(&self, message: &str) -> String {
        format!("{} {message}\n", self.paint("33", "note:"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_without_colour() {
        let plain = Style::default();
        assert_eq!(plain.error("boom"), "error: boom\n");
        assert_eq!(plain.note("hm"), "note: hm\n");
        let coloured = Style { color: true, progress: false };
        assert_eq!(coloured.error("boom"), "\x1b[1;31merror:\x1b[0m boom\n");
    }
}
