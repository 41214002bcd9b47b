//! One report, two renderings: a page is a list of blocks (headings, paragraphs, tables,
//! figures, a code listing) written as `report.md`, with figures linked beside it, and as a
//! self-contained `report.html`, with every PNG embedded, that a browser opens from anywhere.
//!
//! Text may hold `code` spans in backticks; nothing else of Markdown is interpreted.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use base64::Engine as _;
use jepa_eval::error::{ProbeError, Result};

/// A column's alignment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Align {
    Left,
    Right,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Block {
    Heading(u8, String),
    Paragraph(String),
    Table {
        header: Vec<(String, Align)>,
        rows: Vec<Vec<String>>,
    },
    /// A PNG beside the page, with a caption.
    Figure {
        path: PathBuf,
        caption: String,
    },
    /// A listing shown verbatim, folded away in HTML under `title`.
    Code {
        title: String,
        text: String,
    },
}

/// A page being written.
#[derive(Debug, Clone, Default)]
pub struct Page {
    pub blocks: Vec<Block>,
}

impl Page {
    pub fn heading(&mut self, level: u8, text: impl Into<String>) {
        self.blocks.push(Block::Heading(level, text.into()));
    }

    pub fn paragraph(&mut self, text: impl Into<String>) {
        self.blocks.push(Block::Paragraph(text.into()));
    }

    pub fn table(&mut self, header: &[(&str, Align)], rows: Vec<Vec<String>>) {
        let header = header.iter().map(|(name, align)| (name.to_string(), *align)).collect();
        self.blocks.push(Block::Table { header, rows });
    }

    /// A figure, when its file exists (a figure that was not drawn is left out).
    pub fn figure(&mut self, path: PathBuf, caption: impl Into<String>) {
        if path.exists() {
            self.blocks.push(Block::Figure { path, caption: caption.into() });
        }
    }

    pub fn code(&mut self, title: impl Into<String>, text: impl Into<String>) {
        self.blocks.push(Block::Code { title: title.into(), text: text.into() });
    }

    /// The page as Markdown; figures are linked by file name (they sit beside the page).
    pub fn markdown(&self) -> String {
        let mut out = String::new();
        for block in &self.blocks {
            match block {
                Block::Heading(level, text) => {
                    let _ = writeln!(out, "{} {text}\n", "#".repeat(usize::from(*level)));
                }
                Block::Paragraph(text) => {
                    let _ = writeln!(out, "{text}\n");
                }
                Block::Table { header, rows } => {
                    let names: Vec<&str> = header.iter().map(|(name, _)| name.as_str()).collect();
                    let rules: Vec<&str> =
                        header.iter().map(|(_, align)| if *align == Align::Right { "---:" } else { "---" }).collect();
                    let _ = writeln!(out, "| {} |\n|{}|", names.join(" | "), rules.join("|"));
                    for row in rows {
                        let _ = writeln!(out, "| {} |", row.join(" | "));
                    }
                    out.push('\n');
                }
                Block::Figure { path, caption } => {
                    let name = path.file_name().map(|name| name.to_string_lossy().into_owned()).unwrap_or_default();
                    let _ = writeln!(out, "![{caption}]({name})\n\n*{caption}*\n");
                }
                Block::Code { title, text } => {
                    let _ = writeln!(out, "{title}:\n\n```toml\n{}\n```\n", text.trim_end());
                }
            }
        }
        out
    }

    /// The page as one HTML file with every figure embedded (base64 PNG).
    pub fn html(&self, title: &str) -> Result<String> {
        let mut out = String::new();
        let _ = write!(
            out,
            "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n<title>{}</title>\n<style>\n{STYLE}</style>\n</head>\n<body>\n",
            escape(title)
        );
        for block in &self.blocks {
            match block {
                Block::Heading(level, text) => {
                    let _ = writeln!(out, "<h{level}>{}</h{level}>", inline(text));
                }
                Block::Paragraph(text) => {
                    let _ = writeln!(out, "<p>{}</p>", inline(text));
                }
                Block::Table { header, rows } => {
                    let class = |align: Align| if align == Align::Right { " class=\"number\"" } else { "" };
                    out.push_str("<table>\n<thead><tr>");
                    for (name, align) in header {
                        let _ = write!(out, "<th{}>{}</th>", class(*align), inline(name));
                    }
                    out.push_str("</tr></thead>\n<tbody>\n");
                    for row in rows {
                        out.push_str("<tr>");
                        for (cell, (_, align)) in row.iter().zip(header) {
                            let _ = write!(out, "<td{}>{}</td>", class(*align), inline(cell));
                        }
                        out.push_str("</tr>\n");
                    }
                    out.push_str("</tbody>\n</table>\n");
                }
                Block::Figure { path, caption } => {
                    let bytes = std::fs::read(path).map_err(ProbeError::io(path))?;
                    let data = base64::engine::general_purpose::STANDARD.encode(bytes);
                    let _ = writeln!(
                        out,
                        "<figure>\n<img src=\"data:image/png;base64,{data}\" alt=\"{}\">\n<figcaption>{}</figcaption>\n</figure>",
                        escape(caption),
                        inline(caption)
                    );
                }
                Block::Code { title, text } => {
                    let _ = writeln!(
                        out,
                        "<details>\n<summary>{}</summary>\n<pre>{}</pre>\n</details>",
                        inline(title),
                        escape(text.trim_end())
                    );
                }
            }
        }
        out.push_str("</body>\n</html>\n");
        Ok(out)
    }

    /// Writes `report.md` and `report.html`, each whole or not at all.
    pub fn write(&self, title: &str, markdown: &Path, html: &Path) -> Result<()> {
        let html_text = self.html(title)?;
        jepa_shared::atomic::write_bytes(markdown, self.markdown().as_bytes())?;
        jepa_shared::atomic::write_bytes(html, html_text.as_bytes())?;
        Ok(())
    }
}

const STYLE: &str =
    "body { font-family: sans-serif; max-width: 1200px; margin: 2em auto; padding: 0 1em; color: #222; }
table { border-collapse: collapse; margin: 1em 0; }
th, td { border: 1px solid #ccc; padding: 0.25em 0.6em; }
th { background: #f3f3f3; }
td.number, th.number { text-align: right; font-variant-numeric: tabular-nums; }
figure { margin: 1.5em 0; }
img { max-width: 100%; height: auto; border: 1px solid #ddd; }
figcaption { color: #555; font-size: 0.9em; margin-top: 0.3em; }
code, pre { background: #f5f5f5; font-size: 0.9em; }
pre { padding: 0.8em; overflow-x: auto; }
";

fn escape(text: &str) -> String {
    text.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}

/// Escaped text with `code` spans (text with an odd number of backticks keeps them all).
fn inline(text: &str) -> String {
    if !text.matches('`').count().is_multiple_of(2) {
        return escape(text);
    }
    let mut out = String::new();
    for (index, part) in text.split('`').enumerate() {
        if index % 2 == 1 {
            let _ = write!(out, "<code>{}</code>", escape(part));
        } else {
            out.push_str(&escape(part));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_page_renders_as_markdown_and_as_html_with_its_figures_inside() {
        let folder = tempfile::tempdir().unwrap();
        let figure = folder.path().join("plot.png");
        std::fs::write(&figure, b"\x89PNG not really").unwrap();
        let mut page = Page::default();
        page.heading(1, "run `a<b>`");
        page.table(
            &[("encoder", Align::Left), ("accuracy", Align::Right)],
            vec![vec!["pixels".into(), "84.1%".into()]],
        );
        page.figure(figure.clone(), "a plot");
        page.figure(folder.path().join("never-drawn.png"), "left out");
        page.code("config", "name = \"x\"\n");

        let markdown = page.markdown();
        assert!(markdown.starts_with("# run `a<b>`\n"));
        assert!(markdown.contains("| encoder | accuracy |\n|---|---:|\n| pixels | 84.1% |"));
        assert!(markdown.contains("![a plot](plot.png)"));
        assert!(!markdown.contains("left out"));

        let html = page.html("title").unwrap();
        assert!(html.contains("<h1>run <code>a&lt;b&gt;</code></h1>"));
        assert_eq!(inline("a ` b"), "a ` b", "an unmatched backtick stays as it is");
        assert!(html.contains("<td class=\"number\">84.1%</td>"));
        let embedded = base64::engine::general_purpose::STANDARD.encode(b"\x89PNG not really");
        assert!(html.contains(&format!("data:image/png;base64,{embedded}")));
        assert!(!html.contains("plot.png"), "the page must not depend on files beside it");
    }

    #[test]
    fn a_page_whose_figure_cannot_be_read_writes_neither_file() {
        let folder = tempfile::tempdir().unwrap();
        let figure = folder.path().join("plot.png");
        std::fs::write(&figure, b"png").unwrap();
        let mut page = Page::default();
        page.figure(figure.clone(), "a plot");
        std::fs::remove_file(&figure).unwrap();
        let (markdown, html) = (folder.path().join("report.md"), folder.path().join("report.html"));
        let error = page.write("t", &markdown, &html).unwrap_err();
        assert!(error.to_string().contains("plot.png"), "{error}");
        assert_eq!(std::fs::read_dir(folder.path()).unwrap().count(), 0);
    }
}
