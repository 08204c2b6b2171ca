//! The Responses API on a backend that serves only Chat Completions (vLLM,
//! llama.cpp, most LiteLLM deployments): the request becomes a chat request
//! here, the answer (JSON or SSE) becomes a Responses object or event stream
//! in [`Answer`], chunk by chunk.
//!
//! Only the stateless subset translates. Everything that needs OpenAI to
//! remember something (`previous_response_id`, `conversation`, `store: true`,
//! `background`, reusable `prompt`s, `item_reference`s, hosted tools such as
//! `web_search` or `file_search`) is refused with a 400 naming the field, so
//! a client learns at once instead of getting an answer that silently lacks
//! its context. `store` absent is taken as `false`: OpenAI's default is
//! `true`, but the SDKs only send the field when the caller sets it, and a
//! gateway that refused its absence would refuse every plain
//! `client.responses.create(...)`. The answer then says `"store": false`.
//!
//! References: requests <https://platform.openai.com/docs/api-reference/responses/create>,
//! chat <https://platform.openai.com/docs/api-reference/chat/create>.

mod answer;
mod object;
mod request;
mod stream;
#[cfg(test)]
mod tests;

pub use answer::Answer;
pub use request::request;
