//! `--format json`: the run's events as JSON lines on stdout while the run
//! goes on, for editors, dashboards and CI scripts. The same objects as the
//! run log; the human report goes to stderr instead.

use crate::events::Stamped;

#[derive(Default)]
pub struct JsonStream;

impl JsonStream {
    pub fn write(&mut self, event: &Stamped) {
        if let Ok(mut line) = serde_json::to_string(event) {
            line.push('\n');
            // A closed stdout stops the run (see stdio); nothing to do here.
            crate::stdio::out(&line);
        }
    }
}
