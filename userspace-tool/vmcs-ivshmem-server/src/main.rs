use std::os::fd::AsFd;
use std::process::ExitCode;

use clap::Parser;
use nix::sys::signal::{signal, sigprocmask, SigHandler, SigSet, SigmaskHow, Signal};
use nix::sys::signalfd::{SfdFlags, SignalFd};

use vmcs_ivshmem_server::log::Logger;
use vmcs_ivshmem_server::{Config, Server};

fn main() -> ExitCode {
    let cfg = Config::parse();
    let log = Logger::new(cfg.verbose);
    match run(&cfg, log) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            log.info(format_args!("error: {e}"));
            ExitCode::FAILURE
        }
    }
}

fn run(cfg: &Config, log: Logger) -> std::io::Result<()> {
    // Dead peers must show up as EPIPE, never kill us (sends also use
    // MSG_NOSIGNAL; this covers stderr too).
    // SAFETY: SIG_IGN installs no handler code.
    unsafe { signal(Signal::SIGPIPE, SigHandler::SigIgn) }?;

    // SIGINT/SIGTERM/SIGHUP are delivered through a signalfd polled by the
    // main loop, so cleanup runs in normal context.
    let mut mask = SigSet::empty();
    for s in [Signal::SIGINT, Signal::SIGTERM, Signal::SIGHUP] {
        mask.add(s);
    }
    sigprocmask(SigmaskHow::SIG_BLOCK, Some(&mask), None)?;
    let sigfd = SignalFd::with_flags(&mask, SfdFlags::SFD_CLOEXEC | SfdFlags::SFD_NONBLOCK)?;

    let mut server = Server::start(cfg)?;
    server.run(sigfd.as_fd())?;
    if let Ok(Some(info)) = sigfd.read_signal() {
        let name = Signal::try_from(info.ssi_signo as i32).map_or("signal", |s| s.as_str());
        log.info(format_args!("received {name}, removing files and exiting"));
    }
    drop(server);
    Ok(())
}
