//! What a file really is, from its first bytes, and whether that agrees
//! with what the uploader declared.

use colink_proto::files::v1::FileType;

/// How many leading bytes the sniffer looks at.
pub const SNIFF_LEN: usize = 4096;

/// What the bytes turned out to be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sniffed {
    /// A format with a signature, as its MIME type.
    Known(&'static str),
    /// A ZIP container (also OOXML and OpenDocument files).
    Zip,
    /// An OLE2 compound file (legacy Office documents).
    Ole,
    /// Programs and scripts: never accepted.
    Executable(&'static str),
    /// UTF-8 text without control bytes.
    Text,
    /// Bytes of no recognised kind.
    Unknown,
}

/// Looks at the start of a file.
pub fn sniff(head: &[u8]) -> Sniffed {
    let starts = |magic: &[u8]| head.starts_with(magic);
    let at = |offset: usize, magic: &[u8]| head.get(offset..offset + magic.len()) == Some(magic);
    if starts(b"MZ") {
        return Sniffed::Executable("application/vnd.microsoft.portable-executable");
    }
    if starts(b"\x7fELF") {
        return Sniffed::Executable("application/x-elf");
    }
    for magic in [&b"\xfe\xed\xfa\xce"[..], b"\xfe\xed\xfa\xcf", b"\xce\xfa\xed\xfe", b"\xcf\xfa\xed\xfe"] {
        if starts(magic) {
            return Sniffed::Executable("application/x-mach-binary");
        }
    }
    if starts(b"#!") {
        return Sniffed::Executable("text/x-script");
    }
    let known = [
        (&b"\x89PNG\r\n\x1a\n"[..], "image/png"),
        (b"\xff\xd8\xff", "image/jpeg"),
        (b"GIF87a", "image/gif"),
        (b"GIF89a", "image/gif"),
        (b"%PDF-", "application/pdf"),
        (b"\x1f\x8b", "application/gzip"),
        (b"OggS", "audio/ogg"),
        (b"fLaC", "audio/flac"),
        (b"ID3", "audio/mpeg"),
        (b"\x1a\x45\xdf\xa3", "video/webm"),
    ];
    if let Some((_, kind)) = known.iter().find(|(magic, _)| starts(magic)) {
        return Sniffed::Known(kind);
    }
    if starts(b"RIFF") {
        if at(8, b"WEBP") {
            return Sniffed::Known("image/webp");
        }
        if at(8, b"WAVE") {
            return Sniffed::Known("audio/wav");
        }
        if at(8, b"AVI ") {
            return Sniffed::Known("video/x-msvideo");
        }
    }
    if at(4, b"ftyp") {
        return Sniffed::Known(match head.get(8..12) {
            Some(b"qt  ") => "video/quicktime",
            Some(b"M4A ") => "audio/mp4",
            _ => "video/mp4",
        });
    }
    if head.len() >= 2 && head[0] == 0xff && head[1] & 0xe0 == 0xe0 {
        return Sniffed::Known("audio/mpeg");
    }
    if starts(b"PK\x03\x04") || starts(b"PK\x05\x06") {
        return Sniffed::Zip;
    }
    if starts(b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1") {
        return Sniffed::Ole;
    }
    if is_text(head) { Sniffed::Text } else { Sniffed::Unknown }
}

/// UTF-8 without control characters other than whitespace; the last few
/// bytes may be a character cut off by the sample's end.
fn is_text(head: &[u8]) -> bool {
    let valid = match std::str::from_utf8(head) {
        Ok(text) => text,
        Err(err) if err.error_len().is_none() && head.len() - err.valid_up_to() < 4 => {
            // Cut at the sample's end, not invalid.
            match std::str::from_utf8(&head[..err.valid_up_to()]) {
                Ok(text) => text,
                Err(_) => return false,
            }
        }
        Err(_) => return false,
    };
    valid.chars().all(|c| !c.is_control() || matches!(c, '\n' | '\r' | '\t' | '\x0c'))
}

const ZIP_BASED: &[&str] = &[
    "application/zip",
    "application/vnd.openxmlformats-officedocument.wordprocessingml.document",
    "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
    "application/vnd.openxmlformats-officedocument.presentationml.presentation",
    "application/vnd.oasis.opendocument.text",
    "application/vnd.oasis.opendocument.spreadsheet",
    "application/vnd.oasis.opendocument.presentation",
    "application/epub+zip",
];

const OLE_BASED: &[&str] = &["application/msword", "application/vnd.ms-excel", "application/vnd.ms-powerpoint"];

/// Textual types: their bytes must be text.
fn is_textual(declared: &str) -> bool {
    declared.starts_with("text/") || matches!(declared, "application/json" | "application/xml")
}

/// The type a file is kept and served as, or why it is refused: the bytes
/// must be what was declared, or a plain variant of it.
pub fn confirm_type(declared: &str, sniffed: Sniffed) -> Result<String, String> {
    let family = declared.split('/').next().unwrap_or_default();
    match sniffed {
        Sniffed::Executable(kind) => Err(format!("the bytes are an executable ({kind}), which is never allowed")),
        Sniffed::Known(kind) if kind == declared => Ok(declared.to_string()),
        // Containers of the same family whose subtypes are spelled many
        // ways (audio/x-wav, video/x-matroska): the family decides.
        Sniffed::Known(kind) if matches!(family, "audio" | "video") && kind.starts_with(&format!("{family}/")) => {
            Ok(declared.to_string())
        }
        Sniffed::Known(kind) => Err(format!("the bytes are {kind}, not {declared}")),
        Sniffed::Zip if ZIP_BASED.contains(&declared) => Ok(declared.to_string()),
        Sniffed::Ole if OLE_BASED.contains(&declared) => Ok(declared.to_string()),
        Sniffed::Zip => Err(format!("the bytes are a ZIP archive, not {declared}")),
        Sniffed::Ole => Err(format!("the bytes are a legacy Office document, not {declared}")),
        Sniffed::Text if is_textual(declared) => Ok(declared.to_string()),
        Sniffed::Text => Err(format!("the bytes are plain text, not {declared}")),
        _ if is_textual(declared) => Err(format!("the bytes are binary, not {declared}")),
        // Images must be recognised: they are shown inline and thumbnailed.
        _ if family == "image" => Err(format!("the bytes are not a recognised image, not {declared}")),
        _ if ZIP_BASED.contains(&declared) || OLE_BASED.contains(&declared) || declared == "application/pdf" => {
            Err(format!("the bytes are not {declared}"))
        }
        // Formats without a signature this sniffer knows (many audio and
        // video codecs): served as declared, never as something runnable.
        _ => Ok(declared.to_string()),
    }
}

/// The kind a MIME type belongs to, for filters and retention.
pub fn file_type(mime: &str) -> FileType {
    match mime.split('/').next().unwrap_or_default() {
        "image" => FileType::Image,
        "video" => FileType::Video,
        "audio" => FileType::Audio,
        "text" => FileType::Document,
        _ if mime == "application/pdf"
            || ZIP_BASED[1..].contains(&mime)
            || OLE_BASED.contains(&mime)
            || mime == "application/json" =>
        {
            FileType::Document
        }
        _ => FileType::Other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_are_told_by_their_first_bytes() {
        assert_eq!(sniff(b"\x89PNG\r\n\x1a\n...."), Sniffed::Known("image/png"));
        assert_eq!(sniff(b"\xff\xd8\xff\xe0..JFIF"), Sniffed::Known("image/jpeg"));
        assert_eq!(sniff(b"RIFF\0\0\0\0WEBPVP8 "), Sniffed::Known("image/webp"));
        assert_eq!(sniff(b"\0\0\0\x18ftypisom"), Sniffed::Known("video/mp4"));
        assert_eq!(sniff(b"PK\x03\x04rest"), Sniffed::Zip);
        assert_eq!(sniff(b"MZ\x90\0"), Sniffed::Executable("application/vnd.microsoft.portable-executable"));
        assert_eq!(sniff(b"\x7fELF\x02"), Sniffed::Executable("application/x-elf"));
        assert_eq!(sniff(b"#!/bin/sh\nrm -rf /"), Sniffed::Executable("text/x-script"));
        assert_eq!(sniff("h\u{e9}llo, w\u{f6}rld\n".as_bytes()), Sniffed::Text);
        // A character cut by the end of the sample is still text.
        assert_eq!(sniff(&"\u{e9}".as_bytes()[..1]), Sniffed::Text);
        assert_eq!(sniff(b"\x00\x01\x02binary"), Sniffed::Unknown);
    }

    #[test]
    fn a_type_that_lies_is_refused() {
        assert_eq!(confirm_type("image/png", Sniffed::Known("image/png")), Ok("image/png".into()));
        assert!(confirm_type("image/png", Sniffed::Executable("application/x-elf")).is_err());
        assert!(confirm_type("image/png", Sniffed::Known("image/jpeg")).is_err());
        assert!(confirm_type("image/png", Sniffed::Text).is_err());
        assert!(confirm_type("image/png", Sniffed::Unknown).is_err());
        assert!(confirm_type("text/plain", Sniffed::Unknown).is_err());
        assert!(confirm_type("application/pdf", Sniffed::Zip).is_err());
        assert!(confirm_type("text/plain", Sniffed::Executable("text/x-script")).is_err());
        let docx = "application/vnd.openxmlformats-officedocument.wordprocessingml.document";
        assert_eq!(confirm_type(docx, Sniffed::Zip), Ok(docx.into()));
        assert_eq!(confirm_type("audio/x-wav", Sniffed::Known("audio/wav")), Ok("audio/x-wav".into()));
        assert_eq!(confirm_type("video/x-matroska", Sniffed::Unknown), Ok("video/x-matroska".into()));
        assert_eq!(confirm_type("text/csv", Sniffed::Text), Ok("text/csv".into()));
    }
}
