//! Chat templates: how messages are framed as text for the model.

/// How one chat message is framed; a plain mirror of the WIT `chat-template`, so this crate
/// needs no bindings.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Template {
    /// Text that opens the whole conversation; often empty.
    pub bos: String,
    /// Text before each message; `{role}` stands for the role.
    pub message_prefix: String,
    /// Text after each message, including the end of the model's reply.
    pub message_suffix: String,
}

impl Template {
    pub fn new(
        bos: impl Into<String>,
        message_prefix: impl Into<String>,
        message_suffix: impl Into<String>,
    ) -> Self {
        Self {
            bos: bos.into(),
            message_prefix: message_prefix.into(),
            message_suffix: message_suffix.into(),
        }
    }
}

/// One message as the model sees it: prefix (with the role filled in), content, suffix.
pub fn render_message(t: &Template, role: &str, content: &str) -> String {
    let mut text = t.message_prefix.replace("{role}", role);
    text.push_str(content);
    text.push_str(&t.message_suffix);
    text
}

/// The text that opens the model's reply; the model continues from here.
pub fn reply_opening(t: &Template) -> String {
    t.message_prefix.replace("{role}", "assistant")
}

/// The system prompt to use for a new conversation. An empty one counts as none, so a client
/// can opt out of the host's default by sending `""`.
pub fn system_prompt(given: Option<&str>) -> Option<&str> {
    given.filter(|s| !s.is_empty())
}

/// Text that opens a new conversation: bos, then the system message if there is one.
pub fn opening(t: &Template, given_system_prompt: Option<&str>) -> String {
    let mut text = t.bos.clone();
    if let Some(system) = system_prompt(given_system_prompt) {
        text.push_str(&render_message(t, "system", system));
    }
    text
}

/// Text that a new user message adds: the message itself, then the opening of the reply.
pub fn user_turn(t: &Template, prompt: &str) -> String {
    render_message(t, "user", prompt) + &reply_opening(t)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chatml() -> Template {
        Template::new("", "<|im_start|>{role}\n", "<|im_end|>\n")
    }

    #[test]
    fn renders_chatml() {
        let t = chatml();
        assert_eq!(
            render_message(&t, "user", "Hi"),
            "<|im_start|>user\nHi<|im_end|>\n"
        );
        assert_eq!(reply_opening(&t), "<|im_start|>assistant\n");
        assert_eq!(
            user_turn(&t, "Hi"),
            "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n"
        );
    }

    #[test]
    fn opening_has_bos_and_optional_system() {
        let t = Template::new("<s>", "[{role}] ", "\n");
        assert_eq!(opening(&t, Some("Be brief.")), "<s>[system] Be brief.\n");
        assert_eq!(opening(&t, Some("")), "<s>");
        assert_eq!(opening(&t, None), "<s>");
    }
}
