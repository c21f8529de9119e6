//! `token_command`: a command that prints an access token (isync's PassCmd convention),
//! run by `sh -c` for every login, within a time limit and with its output bounded.

use std::process::Stdio;
use std::time::Duration;

use tokio::io::AsyncReadExt;

use super::{check_token, AuthError};

/// More than any access token (Entra ID's are a few KB): a command that prints more is
/// printing something else.
const MAX_OUTPUT: u64 = 64 * 1024;
/// What of the command's stderr goes into the error.
const MAX_STDERR: u64 = 2048;

/// Runs `cmd` and returns the token it printed (its stdout, the final line break cut).
pub(super) async fn run(cmd: &str, limit: Duration) -> Result<String, AuthError> {
    let fail = |why: String| AuthError::Command(format!("{cmd:?}: {why}"));
    let mut child = tokio::process::Command::new("sh")
        .arg("-c")
        .arg(cmd)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| fail(format!("cannot start: {e}")))?;
    let mut stdout = child.stdout.take().expect("piped").take(MAX_OUTPUT + 1);
    let mut stderr = child.stderr.take().expect("piped").take(MAX_STDERR);
    let (mut out, mut err) = (Vec::new(), Vec::new());
    let ran = tokio::time::timeout(limit, async {
        let (o, e) = tokio::join!(stdout.read_to_end(&mut out), stderr.read_to_end(&mut err));
        o.and(e)?;
        child.wait().await
    })
    .await;
    let status = match ran {
        // Dropping the child kills it (kill_on_drop).
        Err(_) => return Err(fail(format!("no token within {limit:?}; stopped"))),
        Ok(Err(e)) => return Err(fail(e.to_string())),
        Ok(Ok(status)) => status,
    };
    let err = String::from_utf8_lossy(&err).trim().to_string();
    if !status.success() {
        return Err(fail(format!("{status}: {err}")));
    }
    if out.len() as u64 > MAX_OUTPUT {
        return Err(fail(format!("printed more than {MAX_OUTPUT} bytes")));
    }
    let token = String::from_utf8_lossy(&out)
        .trim_end_matches(['\r', '\n'])
        .to_string();
    check_token(&token).map_err(fail)?;
    Ok(token)
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMIT: Duration = Duration::from_secs(10);

    #[tokio::test]
    async fn the_token_is_what_the_command_prints() {
        assert_eq!(run("echo abc.def-1", LIMIT).await.unwrap(), "abc.def-1");
    }

    #[tokio::test]
    async fn a_failing_command_says_why() {
        let e = run("echo 'no such account' >&2; exit 3", LIMIT)
            .await
            .unwrap_err();
        let s = e.to_string();
        assert!(
            s.contains("exit status: 3") && s.contains("no such account"),
            "{s}"
        );
        let e = run("echo", LIMIT).await.unwrap_err();
        assert!(e.to_string().contains("empty"), "{e}");
        let e = run("head -c 100000 /dev/zero | tr '\\0' a", LIMIT)
            .await
            .unwrap_err();
        assert!(e.to_string().contains("more than"), "{e}");
    }

    #[tokio::test]
    async fn a_command_that_hangs_is_stopped() {
        let e = run("sleep 30", Duration::from_millis(200))
            .await
            .unwrap_err();
        assert!(e.to_string().contains("no token within"), "{e}");
    }
}
