//! `sluice user`: SCRAM users (KIP-554): set a password, list users with
//! their mechanisms and iterations, delete a mechanism's credential. Done
//! through librdkafka's admin C API (rdkafka has no wrapper for it); the
//! password is read from stdin, never from the command line, and
//! librdkafka salts it, so only the salted password crosses the wire.

use std::ffi::CString;
use std::io::{BufRead, IsTerminal, Read, Write};
use std::os::raw::c_char;
use std::time::Duration;

use anyhow::{anyhow, bail, Context};
use rdkafka::bindings;
use rdkafka::client::{Client, ClientContext};
use serde_json::{json, Value};

use super::client::{text, Common};
use super::output::{emit, emit_message, print_json, table, Format};

/// Kafka's default for a new credential (kafka-configs.sh uses it too).
const ITERATIONS_DEFAULT: i32 = 4096;

/// Bound on a password read from stdin: SCRAM passwords are typed or
/// generated, and reading a whole file by mistake must not go on.
const PASSWORD_BYTES_MAX: u64 = 1024;

/// How much longer than the request timeout the answer is awaited, so
/// that librdkafka's own timeout, with its message, comes first.
const ANSWER_MARGIN: Duration = Duration::from_secs(5);

#[derive(clap::Args, Debug)]
pub struct UserArgs {
    #[command(flatten)]
    common: Common,
    #[command(subcommand)]
    command: UserCommand,
}

#[derive(clap::Subcommand, Debug)]
enum UserCommand {
    /// Create a user, or set the password of one of its mechanisms. The
    /// password is one line read from stdin (a terminal is prompted,
    /// twice, without echo).
    Set {
        /// The user name (SASL's sasl.username).
        name: String,
        /// The SCRAM mechanism the credential is for.
        #[arg(long, value_enum, ignore_case = true)]
        mechanism: Mechanism,
        /// PBKDF2 iterations; Kafka accepts 4096 to 16384.
        #[arg(long, default_value_t = ITERATIONS_DEFAULT)]
        iterations: i32,
    },
    /// Users with their mechanisms and iterations: every user, or those
    /// named (a name without credentials fails with RESOURCE_NOT_FOUND).
    List {
        /// Users to show [default: all].
        names: Vec<String>,
    },
    /// Delete a user's credential for one mechanism; a user without
    /// credentials no longer exists.
    Delete {
        /// The user name.
        name: String,
        /// The SCRAM mechanism whose credential goes.
        #[arg(long, value_enum, ignore_case = true)]
        mechanism: Mechanism,
    },
}

#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
enum Mechanism {
    #[value(name = "SCRAM-SHA-256")]
    ScramSha256,
    #[value(name = "SCRAM-SHA-512")]
    ScramSha512,
}

impl Mechanism {
    fn native(self) -> bindings::rd_kafka_ScramMechanism_t {
        match self {
            Mechanism::ScramSha256 => {
                bindings::rd_kafka_ScramMechanism_t::RD_KAFKA_SCRAM_MECHANISM_SHA_256
            }
            Mechanism::ScramSha512 => {
                bindings::rd_kafka_ScramMechanism_t::RD_KAFKA_SCRAM_MECHANISM_SHA_512
            }
        }
    }

    fn name(self) -> &'static str {
        match self {
            Mechanism::ScramSha256 => "SCRAM-SHA-256",
            Mechanism::ScramSha512 => "SCRAM-SHA-512",
        }
    }
}

fn mechanism_name(m: bindings::rd_kafka_ScramMechanism_t) -> &'static str {
    use bindings::rd_kafka_ScramMechanism_t as M;
    match m {
        M::RD_KAFKA_SCRAM_MECHANISM_SHA_256 => Mechanism::ScramSha256.name(),
        M::RD_KAFKA_SCRAM_MECHANISM_SHA_512 => Mechanism::ScramSha512.name(),
        _ => "UNKNOWN",
    }
}

pub fn run(args: UserArgs) -> anyhow::Result<()> {
    let c = &args.common;
    match args.command {
        UserCommand::Set {
            name,
            mechanism,
            iterations,
        } => {
            let password = read_password(&name)?;
            set(c, &name, mechanism, iterations, &password)
        }
        UserCommand::List { names } => list(c, &names),
        UserCommand::Delete { name, mechanism } => delete(c, &name, mechanism),
    }
}

/// A per-user failure as Kafka names it, e.g. RESOURCE_NOT_FOUND.
pub(super) struct UserError {
    pub(super) name: String,
    pub(super) message: String,
}

impl UserError {
    /// The error of a result, None if it succeeded.
    ///
    /// # Safety
    /// `e` is null or an error object alive for the call.
    pub(super) unsafe fn from_native(e: *const bindings::rd_kafka_error_t) -> Option<UserError> {
        // SAFETY: as the caller promised; the strings are copied.
        unsafe {
            if bindings::rd_kafka_error_code(e)
                == bindings::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_NO_ERROR
            {
                return None;
            }
            // librdkafka 2.12 copies a result's error message up to the
            // next NUL of the response buffer rather than by its length:
            // in a DescribeUserScramCredentials result the bytes after it
            // are the (empty) credentials' count, 0x01, and the tag
            // buffer's 0x00. A message never ends in control characters.
            let message = text(bindings::rd_kafka_error_string(e));
            Some(UserError {
                name: text(bindings::rd_kafka_error_name(e)),
                message: message.trim_end_matches(char::is_control).to_string(),
            })
        }
    }

    fn json(&self) -> Value {
        json!({ "code": self.name, "message": self.message })
    }
}

/// Creates or replaces `name`'s credential for `mechanism`.
fn set(
    c: &Common,
    name: &str,
    mechanism: Mechanism,
    iterations: i32,
    password: &str,
) -> anyhow::Result<()> {
    let user = c_string(name)?;
    // SAFETY: the strings outlive the call; librdkafka copies them (and
    // draws a random salt) into an alteration we own and destroy.
    let alteration = Alteration(unsafe {
        bindings::rd_kafka_UserScramCredentialUpsertion_new(
            user.as_ptr(),
            mechanism.native(),
            iterations,
            password.as_ptr(),
            password.len(),
            std::ptr::null(),
            0,
        )
    });
    let failure = alter(c, alteration, name)?;
    let json = json!({
        "user": name,
        "mechanism": mechanism.name(),
        "iterations": iterations,
        "error": failure.as_ref().map(UserError::json),
    });
    report(
        c,
        &json,
        failure,
        name,
        &format!(
            "Set the {} credential of {name} ({iterations} iterations).",
            mechanism.name()
        ),
    )
}

fn delete(c: &Common, name: &str, mechanism: Mechanism) -> anyhow::Result<()> {
    let user = c_string(name)?;
    // SAFETY: as in `set`.
    let alteration = Alteration(unsafe {
        bindings::rd_kafka_UserScramCredentialDeletion_new(user.as_ptr(), mechanism.native())
    });
    let failure = alter(c, alteration, name)?;
    let json = json!({
        "user": name,
        "mechanism": mechanism.name(),
        "deleted": failure.is_none(),
        "error": failure.as_ref().map(UserError::json),
    });
    report(
        c,
        &json,
        failure,
        name,
        &format!("Deleted the {} credential of {name}.", mechanism.name()),
    )
}

/// Prints the outcome of a change to one user: the message, or the JSON
/// (also on failure, for scripts) and an error naming Kafka's code.
fn report(
    c: &Common,
    json: &Value,
    failure: Option<UserError>,
    name: &str,
    message: &str,
) -> anyhow::Result<()> {
    match failure {
        None => {
            emit_message(c.format, json, message);
            Ok(())
        }
        Some(e) => {
            if c.format == Format::Json {
                print_json(json);
            }
            bail!("user {name}: {}: {}", e.name, e.message)
        }
    }
}

/// Sends one alteration; the broker's verdict on `name`.
fn alter(c: &Common, alteration: Alteration, name: &str) -> anyhow::Result<Option<UserError>> {
    if alteration.0.is_null() {
        bail!("librdkafka could not build the credential change");
    }
    let admin = c.admin()?;
    let mut alterations = [alteration.0];
    let event = call(
        admin.inner(),
        c,
        bindings::RD_KAFKA_EVENT_ALTERUSERSCRAMCREDENTIALS_RESULT,
        // SAFETY: the array and the alteration outlive the call, which
        // copies them.
        |rk, options, queue| unsafe {
            bindings::rd_kafka_AlterUserScramCredentials(
                rk,
                alterations.as_mut_ptr(),
                alterations.len(),
                options,
                queue,
            );
        },
    )
    .with_context(|| format!("changing the credentials of {name:?}"))?;
    // SAFETY: the result and the responses live as long as `event`, and
    // every string is copied before it drops.
    unsafe {
        let result = bindings::rd_kafka_event_AlterUserScramCredentials_result(event.0);
        if result.is_null() {
            bail!("no AlterUserScramCredentials result in librdkafka's answer");
        }
        let mut count = 0usize;
        let responses =
            bindings::rd_kafka_AlterUserScramCredentials_result_responses(result, &mut count);
        for i in 0..count {
            let r = *responses.add(i);
            if text(bindings::rd_kafka_AlterUserScramCredentials_result_response_user(r)) == name {
                return Ok(UserError::from_native(
                    bindings::rd_kafka_AlterUserScramCredentials_result_response_error(r),
                ));
            }
        }
    }
    Err(anyhow!(
        "the broker's answer does not mention user {name:?}"
    ))
}

/// A user as DescribeUserScramCredentials answers it: name, (mechanism,
/// iterations) per credential, the error if it failed.
type Described = (String, Vec<(&'static str, i32)>, Option<UserError>);

fn list(c: &Common, names: &[String]) -> anyhow::Result<()> {
    let admin = c.admin()?;
    let users: Vec<CString> = names
        .iter()
        .map(|n| c_string(n))
        .collect::<anyhow::Result<_>>()?;
    let mut pointers: Vec<*const c_char> = users.iter().map(|u| u.as_ptr()).collect();
    let event = call(
        admin.inner(),
        c,
        bindings::RD_KAFKA_EVENT_DESCRIBEUSERSCRAMCREDENTIALS_RESULT,
        // SAFETY: the names outlive the call, which copies them; none, a
        // null array, asks for every user.
        |rk, options, queue| unsafe {
            let users = if pointers.is_empty() {
                std::ptr::null_mut()
            } else {
                pointers.as_mut_ptr()
            };
            bindings::rd_kafka_DescribeUserScramCredentials(
                rk,
                users,
                pointers.len(),
                options,
                queue,
            );
        },
    )
    .context("describing SCRAM users")?;
    let mut described: Vec<Described> = Vec::new();
    // SAFETY: as in `alter`.
    unsafe {
        let result = bindings::rd_kafka_event_DescribeUserScramCredentials_result(event.0);
        if result.is_null() {
            bail!("no DescribeUserScramCredentials result in librdkafka's answer");
        }
        let mut count = 0usize;
        let descriptions =
            bindings::rd_kafka_DescribeUserScramCredentials_result_descriptions(result, &mut count);
        for i in 0..count {
            let d = *descriptions.add(i);
            let user = text(bindings::rd_kafka_UserScramCredentialsDescription_user(d));
            let error =
                UserError::from_native(bindings::rd_kafka_UserScramCredentialsDescription_error(d));
            let n = bindings::rd_kafka_UserScramCredentialsDescription_scramcredentialinfo_count(d);
            let mut credentials = Vec::with_capacity(n);
            for j in 0..n {
                let info =
                    bindings::rd_kafka_UserScramCredentialsDescription_scramcredentialinfo(d, j);
                credentials.push((
                    mechanism_name(bindings::rd_kafka_ScramCredentialInfo_mechanism(info)),
                    bindings::rd_kafka_ScramCredentialInfo_iterations(info),
                ));
            }
            credentials.sort_unstable();
            described.push((user, credentials, error));
        }
    }
    described.sort_by(|a, b| a.0.cmp(&b.0));

    let mut t = table(["USER", "MECHANISM", "ITERATIONS"]);
    let mut failed = Vec::new();
    let mut users_json = Vec::new();
    for (user, credentials, error) in &described {
        for (mechanism, iterations) in credentials {
            t.add_row(vec![
                user.clone(),
                mechanism.to_string(),
                iterations.to_string(),
            ]);
        }
        users_json.push(json!({
            "user": user,
            "credentials": credentials
                .iter()
                .map(|(m, i)| json!({ "mechanism": m, "iterations": i }))
                .collect::<Vec<_>>(),
            "error": error.as_ref().map(UserError::json),
        }));
        if let Some(e) = error {
            failed.push(format!("user {user}: {}: {}", e.name, e.message));
        }
    }
    let json = json!({ "users": users_json });
    if failed.is_empty() {
        emit(c.format, &json, &[("", t)]);
        return Ok(());
    }
    // What was found is still shown; the failures are the error.
    match c.format {
        Format::Json => print_json(&json),
        Format::Table if failed.len() < described.len() => emit(c.format, &json, &[("", t)]),
        Format::Table => {}
    }
    bail!("{}", failed.join("; "))
}

/// One admin request through librdkafka's C API on `client`: `start`
/// issues it with our options onto a queue of ours; the answer is the
/// event of type `expected`, or the error of the whole request.
pub(super) fn call<C: ClientContext>(
    client: &Client<C>,
    c: &Common,
    expected: i32,
    start: impl FnOnce(
        *mut bindings::rd_kafka_t,
        *const bindings::rd_kafka_AdminOptions_t,
        *mut bindings::rd_kafka_queue_t,
    ),
) -> anyhow::Result<Event> {
    let rk = client.native_ptr();
    let timeout_ms = i32::try_from(c.timeout_ms).unwrap_or(i32::MAX);
    // SAFETY: the client is alive; the queue and the options are ours and
    // destroyed by their guards (librdkafka copies the options into the
    // request, so they may go before the answer comes).
    let queue = Queue(unsafe { bindings::rd_kafka_queue_new(rk) });
    let options = Options(unsafe {
        bindings::rd_kafka_AdminOptions_new(
            rk,
            bindings::rd_kafka_admin_op_t::RD_KAFKA_ADMIN_OP_ANY,
        )
    });
    let mut err = [0 as c_char; 256];
    // SAFETY: the buffer's length goes with it.
    let set = unsafe {
        bindings::rd_kafka_AdminOptions_set_request_timeout(
            options.0,
            timeout_ms,
            err.as_mut_ptr(),
            err.len(),
        )
    };
    if set != bindings::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_NO_ERROR {
        // SAFETY: librdkafka wrote a NUL-terminated message.
        bail!("--timeout-ms: {}", unsafe { text(err.as_ptr()) });
    }
    start(rk, options.0, queue.0);
    let wait = c.timeout() + ANSWER_MARGIN;
    let wait_ms = i32::try_from(wait.as_millis()).unwrap_or(i32::MAX);
    // SAFETY: a live queue; the event is ours, destroyed by its guard.
    let event = Event(unsafe { bindings::rd_kafka_queue_poll(queue.0, wait_ms) });
    if event.0.is_null() {
        bail!("no answer within {} ms", wait.as_millis());
    }
    // SAFETY: a live event.
    unsafe {
        let code = bindings::rd_kafka_event_error(event.0);
        if code != bindings::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_NO_ERROR {
            bail!(
                "{}: {}",
                text(bindings::rd_kafka_err2name(code)),
                text(bindings::rd_kafka_event_error_string(event.0))
            );
        }
        let kind = bindings::rd_kafka_event_type(event.0);
        if kind != expected {
            bail!("librdkafka answered with event type {kind}, not {expected}");
        }
    }
    Ok(event)
}

/// The password: one line from stdin without its line end, at most
/// PASSWORD_BYTES_MAX bytes, not empty; prompted for (twice, without
/// echo) when stdin is a terminal.
fn read_password(user: &str) -> anyhow::Result<String> {
    let stdin = std::io::stdin();
    let password = if stdin.is_terminal() {
        let first = prompt_hidden(&format!("Password for {user}: "))?;
        let again = prompt_hidden("Again: ")?;
        if first != again {
            bail!("the two passwords differ");
        }
        first
    } else {
        read_line(&mut stdin.lock())?
    };
    if password.is_empty() {
        bail!("empty password: give the password as one line on stdin");
    }
    Ok(password)
}

/// One line, bounded, without its `\n` or `\r\n`.
fn read_line(input: &mut impl BufRead) -> anyhow::Result<String> {
    let mut line = Vec::new();
    input
        .take(PASSWORD_BYTES_MAX + 2)
        .read_until(b'\n', &mut line)
        .context("reading the password from stdin")?;
    if line.last() == Some(&b'\n') {
        line.pop();
        if line.last() == Some(&b'\r') {
            line.pop();
        }
    }
    if line.len() as u64 > PASSWORD_BYTES_MAX {
        bail!("the password on stdin is longer than {PASSWORD_BYTES_MAX} bytes");
    }
    String::from_utf8(line).map_err(|_| anyhow!("the password on stdin is not UTF-8"))
}

/// Prompts on stderr and reads a line from the terminal on stdin with
/// echo off, restoring the terminal's settings afterwards.
fn prompt_hidden(prompt: &str) -> anyhow::Result<String> {
    let mut stderr = std::io::stderr();
    let _ = write!(stderr, "{prompt}");
    let _ = stderr.flush();
    let _echo_off = EchoOff::new()?;
    read_line(&mut std::io::stdin().lock())
}

/// Terminal echo switched off on stdin while alive.
struct EchoOff(libc::termios);

impl EchoOff {
    fn new() -> anyhow::Result<EchoOff> {
        // SAFETY: termios is plain data; tcgetattr fills it for fd 0.
        let mut saved: libc::termios = unsafe { std::mem::zeroed() };
        if unsafe { libc::tcgetattr(libc::STDIN_FILENO, &mut saved) } != 0 {
            return Err(std::io::Error::last_os_error()).context("reading the terminal settings");
        }
        let mut quiet = saved;
        quiet.c_lflag &= !libc::ECHO;
        // Enter is still shown, so the prompt's line ends.
        quiet.c_lflag |= libc::ECHONL;
        // SAFETY: a termios obtained from tcgetattr, changed in flags only.
        if unsafe { libc::tcsetattr(libc::STDIN_FILENO, libc::TCSAFLUSH, &quiet) } != 0 {
            return Err(std::io::Error::last_os_error()).context("switching terminal echo off");
        }
        Ok(EchoOff(saved))
    }
}

impl Drop for EchoOff {
    fn drop(&mut self) {
        // SAFETY: restores the settings read in `new`.
        unsafe {
            libc::tcsetattr(libc::STDIN_FILENO, libc::TCSAFLUSH, &self.0);
        }
    }
}

fn c_string(name: &str) -> anyhow::Result<CString> {
    if name.is_empty() {
        bail!("a user name must not be empty");
    }
    CString::new(name).map_err(|_| anyhow!("user name {name:?} holds a NUL byte"))
}

/// Owners of librdkafka objects, destroyed on drop.
struct Queue(*mut bindings::rd_kafka_queue_t);
struct Options(*mut bindings::rd_kafka_AdminOptions_t);
pub(super) struct Event(pub(super) *mut bindings::rd_kafka_event_t);
struct Alteration(*mut bindings::rd_kafka_UserScramCredentialAlteration_t);

impl Drop for Queue {
    fn drop(&mut self) {
        // SAFETY: created by rd_kafka_queue_new, destroyed once.
        unsafe { bindings::rd_kafka_queue_destroy(self.0) }
    }
}

impl Drop for Options {
    fn drop(&mut self) {
        // SAFETY: created by rd_kafka_AdminOptions_new, destroyed once.
        unsafe { bindings::rd_kafka_AdminOptions_destroy(self.0) }
    }
}

impl Drop for Event {
    fn drop(&mut self) {
        // SAFETY: polled from our queue (null is allowed), destroyed once.
        unsafe { bindings::rd_kafka_event_destroy(self.0) }
    }
}

impl Drop for Alteration {
    fn drop(&mut self) {
        if !self.0.is_null() {
            // SAFETY: created by an _new function, destroyed once.
            unsafe { bindings::rd_kafka_UserScramCredentialAlteration_destroy(self.0) }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_password_line_loses_its_line_end_only() {
        for (input, want) in [
            ("s3cret\n", "s3cret"),
            ("s3cret\r\n", "s3cret"),
            ("s3cret", "s3cret"),
            (" spaced out \nsecond line\n", " spaced out "),
            ("\n", ""),
        ] {
            let got = read_line(&mut input.as_bytes()).expect(input);
            assert_eq!(got, want, "{input:?}");
        }
    }

    #[test]
    fn an_overlong_password_is_refused() {
        let long = "x".repeat(PASSWORD_BYTES_MAX as usize + 1);
        assert!(read_line(&mut long.as_bytes()).is_err());
        let fits = "x".repeat(PASSWORD_BYTES_MAX as usize) + "\r\n";
        assert_eq!(
            read_line(&mut fits.as_bytes()).expect("fits").len(),
            PASSWORD_BYTES_MAX as usize
        );
    }
}
