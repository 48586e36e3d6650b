//! `tapline man`: the manual page, written from the command-line definition, with every
//! subcommand's synopsis, description and options (not one line each).

use std::io::Write;

use clap::CommandFactory;
use clap_mangen::Man;

use super::Cli;

/// The whole page, in roff.
pub(super) fn render(out: &mut dyn Write) -> std::io::Result<()> {
    let mut command = Cli::command();
    command.build();
    Man::new(command.clone()).render(out)?;
    for subcommand in command.get_subcommands() {
        render_command(out, subcommand, "tapline")?;
    }
    Ok(())
}

/// A subcommand's section: its synopsis, description and options as subsections, then its
/// own subcommands (`tapline state forget`).
fn render_command(
    out: &mut dyn Write,
    command: &clap::Command,
    parent: &str,
) -> std::io::Result<()> {
    if command.get_name() == "help" {
        return Ok(());
    }
    let name = format!("{parent} {}", command.get_name());
    writeln!(out, ".SH \"{}\"", name.to_uppercase())?;
    let page = Man::new(command.clone().bin_name(name.clone()));
    let mut parts = Vec::new();
    page.render_synopsis_section(&mut parts)?;
    page.render_description_section(&mut parts)?;
    if command
        .get_arguments()
        .any(|argument| !argument.is_hide_set())
    {
        page.render_options_section(&mut parts)?;
    }
    // The page's sections become subsections of this command's.
    for line in String::from_utf8_lossy(&parts).lines() {
        match line.strip_prefix(".SH ") {
            Some(heading) => writeln!(out, ".SS {heading}")?,
            None => writeln!(out, "{line}")?,
        }
    }
    for subcommand in command.get_subcommands() {
        render_command(out, subcommand, &name)?;
    }
    Ok(())
}
