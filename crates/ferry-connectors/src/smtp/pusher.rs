//! The `smtp` pusher: one e-mail per passenger, sent through an `smtp` connection.

use async_trait::async_trait;
use ferry_core::template::Template;
use ferry_core::{BuildContext, BuildError, Passenger, Pusher, PusherFactory, StepError};
use lettre::message::header::ContentType;
use lettre::message::{Attachment, Mailbox, Mailboxes, MultiPart, SinglePart};
use lettre::{AsyncTransport, Message};
use tracing::debug;

use super::config::{Attachments, SmtpPusherConfig};
use super::connection::{self, SmtpConnection};

/// Builds `smtp` pushers.
pub struct SmtpPusherFactory;

impl PusherFactory for SmtpPusherFactory {
    const TYPE: &'static str = "smtp";
    type Config = SmtpPusherConfig;

    fn build(
        &self,
        config: SmtpPusherConfig,
        ctx: &BuildContext,
    ) -> Result<Box<dyn Pusher>, BuildError> {
        let connection = connection::of_context(ctx, "connection", &config.connection)?;
        let to = addresses("to", &config.to)?;
        let cc = addresses("cc", &config.cc)?;
        let bcc = addresses("bcc", &config.bcc)?;
        if to.is_empty() && cc.is_empty() && bcc.is_empty() {
            return Err(BuildError::at(
                "to",
                "missing key `to`: at least one recipient (`to`, `cc` or `bcc`) is required",
            ));
        }
        let from = match &config.from {
            Some(from) => address("from", from)?,
            None => match &connection.from {
                Some(from) => Address::Fixed(Mailboxes::from(from.clone())),
                None => {
                    return Err(BuildError::at(
                        "from",
                        format!(
                            "missing key `from`: the sender; or give connection `{}` a `from`",
                            connection.name
                        ),
                    ));
                }
            },
        };
        let template = |key: &str, text: &str| {
            Template::parse(text).map_err(|message| BuildError::at(key, message))
        };
        Ok(Box::new(SmtpPusher {
            to,
            cc,
            bcc,
            from,
            subject: template("subject", &config.subject)?,
            body: config
                .body
                .as_deref()
                .map(|body| template("body", body))
                .transpose()?,
            attachments: config.attachments,
            attachment_name: template("attachment_name", &config.attachment_name)?,
            component: ctx.component.clone(),
            connection,
        }))
    }
}

/// A sender or recipient as written: fixed, or a template rendered per passenger.
#[derive(Clone, Debug)]
enum Address {
    Fixed(Mailboxes),
    Template { key: String, template: Template },
}

/// The addresses under `key`, each checked now when it has no placeholder.
fn addresses(key: &str, written: &[String]) -> Result<Vec<Address>, BuildError> {
    let mut out = Vec::with_capacity(written.len());
    for (index, text) in written.iter().enumerate() {
        let address = address(&format!("{key}.{index}"), text).map_err(|error| BuildError {
            path: vec![key.to_string(), index.to_string()],
            ..error
        })?;
        out.push(address);
    }
    Ok(out)
}

fn address(key: &str, text: &str) -> Result<Address, BuildError> {
    if text.contains('{') {
        let template = Template::parse(text).map_err(|message| BuildError::at(key, message))?;
        return Ok(Address::Template {
            key: key.to_string(),
            template,
        });
    }
    text.parse::<Mailboxes>()
        .map(Address::Fixed)
        .map_err(|error| BuildError::at(key, format!("not an e-mail address `{text}`: {error}")))
}

/// Sends each passenger as one message.
pub struct SmtpPusher {
    connection: SmtpConnection,
    to: Vec<Address>,
    cc: Vec<Address>,
    bcc: Vec<Address>,
    from: Address,
    subject: Template,
    body: Option<Template>,
    attachments: Attachments,
    attachment_name: Template,
    /// The pusher's name, part of every Message-ID.
    component: String,
}

#[async_trait]
impl Pusher for SmtpPusher {
    async fn push(&self, passengers: &[&Passenger]) -> Vec<Result<(), StepError>> {
        let mut results = Vec::with_capacity(passengers.len());
        // One connection for the batch: the pool holds one and hands it to each send in turn.
        let transport = match self.connection.transport(1) {
            Ok(transport) => transport,
            Err(error) => return vec![Err(error); passengers.len()],
        };
        for passenger in passengers {
            let message = match self.message(passenger) {
                Ok(message) => message,
                Err(error) => {
                    results.push(Err(error));
                    continue;
                }
            };
            let result = match transport.send(message).await {
                Ok(_) => Ok(()),
                Err(error) => Err(connection::classify(&self.connection, &error)),
            };
            if let Err(error) = &result
                && !error.retryable
            {
                debug!(id = %passenger.id, %error, "message refused");
            }
            results.push(result);
        }
        results
    }
}

impl SmtpPusher {
    /// The message for `passenger`: headers from the templates, a Message-ID derived from its
    /// id (the same on every attempt, so a receiver can drop a second copy), and its text and
    /// attachments as `attachments` says.
    pub(crate) fn message(&self, passenger: &Passenger) -> Result<Message, StepError> {
        let mut builder = Message::builder()
            .subject(self.subject.render_text(passenger))
            .message_id(Some(message_id(passenger, &self.component)));
        for from in render(std::slice::from_ref(&self.from), passenger)? {
            builder = builder.from(from);
        }
        let to = render(&self.to, passenger)?;
        let cc = render(&self.cc, passenger)?;
        let bcc = render(&self.bcc, passenger)?;
        if to.is_empty() && cc.is_empty() && bcc.is_empty() {
            return Err(StepError::permanent(
                "no recipient: `to`, `cc` and `bcc` rendered empty for this passenger",
            ));
        }
        for mailbox in to {
            builder = builder.to(mailbox);
        }
        for mailbox in cc {
            builder = builder.cc(mailbox);
        }
        for mailbox in bcc {
            builder = builder.bcc(mailbox);
        }
        let text = self.text(passenger)?;
        let parts = self.attached(passenger)?;
        let built = if parts.is_empty() {
            builder.singlepart(text)
        } else {
            let mut multipart = MultiPart::mixed().singlepart(text);
            for part in parts {
                multipart = multipart.singlepart(part);
            }
            builder.multipart(multipart)
        };
        built.map_err(|error| StepError::permanent(format!("cannot build the message: {error}")))
    }

    /// The text part: the `body` template, else the passenger's body when the message does not
    /// carry it as an attachment.
    fn text(&self, passenger: &Passenger) -> Result<SinglePart, StepError> {
        if let Some(template) = &self.body {
            return Ok(SinglePart::plain(template.render_text(passenger)));
        }
        if self.attachments == Attachments::Body || passenger.body.data.is_empty() {
            return Ok(SinglePart::plain(String::new()));
        }
        let media_type = &passenger.body.media_type;
        let text = std::str::from_utf8(&passenger.body.data).map_err(|_| {
            StepError::permanent(format!(
                "the body ({media_type}) is not text; send it with `attachments: body`, or \
                 give the message a `body`"
            ))
        })?;
        Ok(match media_type.starts_with("text/html") {
            true => SinglePart::html(text.to_string()),
            false => SinglePart::plain(text.to_string()),
        })
    }

    /// The attachment parts `attachments` asks for.
    fn attached(&self, passenger: &Passenger) -> Result<Vec<SinglePart>, StepError> {
        let mut parts = Vec::new();
        match self.attachments {
            Attachments::None => {}
            Attachments::Passenger => {
                for attachment in &passenger.attachments {
                    let media_type = content_type(&attachment.media_type, &attachment.name)?;
                    parts.push(
                        Attachment::new(attachment.name.clone())
                            .body(attachment.content.to_vec(), media_type),
                    );
                }
            }
            Attachments::Body => {
                let name = self.attachment_name.render(passenger);
                let media_type = content_type(&passenger.body.media_type, &name)?;
                parts.push(Attachment::new(name).body(passenger.body.data.to_vec(), media_type));
            }
        }
        Ok(parts)
    }
}

/// The Message-ID of the message `component` sends for `passenger`: stable across attempts.
pub(crate) fn message_id(passenger: &Passenger, component: &str) -> String {
    let component: String = component
        .chars()
        .map(|c| match c.is_ascii_alphanumeric() || c == '-' {
            true => c,
            false => '_',
        })
        .collect();
    format!("<{}.{component}@ferry>", passenger.id)
}

/// The addresses of `list` for `passenger`; a rendered template that is empty (a metadata key
/// the passenger lacks) adds none, one that is not an address fails permanently.
fn render(list: &[Address], passenger: &Passenger) -> Result<Vec<Mailbox>, StepError> {
    let mut out = Vec::new();
    for address in list {
        match address {
            Address::Fixed(mailboxes) => out.extend(mailboxes.iter().cloned()),
            Address::Template { key, template } => {
                let text = template.render_text(passenger);
                if text.trim().is_empty() {
                    continue;
                }
                let mailboxes = text.parse::<Mailboxes>().map_err(|error| {
                    StepError::permanent(format!("{key}: not an e-mail address `{text}`: {error}"))
                })?;
                out.extend(mailboxes);
            }
        }
    }
    Ok(out)
}

/// `media_type` as a MIME content type, for the attachment `name`.
fn content_type(media_type: &str, name: &str) -> Result<ContentType, StepError> {
    ContentType::parse(media_type).map_err(|error| {
        StepError::permanent(format!(
            "attachment `{name}`: invalid media type `{media_type}`: {error}"
        ))
    })
}
