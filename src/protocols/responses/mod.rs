//! OpenAI's Responses API (`/v1/responses`): passed through to backends that
//! serve it, translated to Chat Completions for those that do not.
//!
//! Reference: <https://platform.openai.com/docs/api-reference/responses>.

pub mod to_chat;
