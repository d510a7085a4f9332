//! Search through the real gRPC client: what is found, how it is marked,
//! and that nothing is shown to someone who may not read it.

use std::time::Duration;

use colink_proto::channels::v1::{ChannelKind, JoinChannelRequest, LeaveChannelRequest};
use colink_proto::messaging::v1::{
    DeleteMessageRequest, EditMessageRequest, ExportMessagesRequest, Message, RecallMessageRequest, SendMessageRequest,
};
use colink_proto::search::v1::{
    GetReindexRequest, ReindexState, SearchFilesRequest, SearchMessagesRequest, SearchMessagesResponse, SearchOrder,
    SearchUsersRequest, StartReindexRequest,
};
use colink_proto::users::v1::{UpdateMeRequest, User};
use tonic::Code;

use crate::helpers::{TestApp, TestUser, assert_code, assert_invalid};

fn query(text: &str) -> SearchMessagesRequest {
    SearchMessagesRequest { query: text.into(), ..Default::default() }
}

async fn search(app: &TestApp, user: &TestUser, request: SearchMessagesRequest) -> SearchMessagesResponse {
    app.search().search_messages(user.req(request)).await.unwrap().into_inner()
}

/// The ids found, once the index shows `expected` hits (indexing is
/// asynchronous: a message is searchable shortly after it is sent).
async fn found(app: &TestApp, user: &TestUser, request: SearchMessagesRequest, expected: usize) -> Vec<String> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let response = search(app, user, request.clone()).await;
        if response.hits.len() == expected || tokio::time::Instant::now() > deadline {
            let ids: Vec<String> = response.hits.iter().map(|h| h.message_id.clone()).collect();
            assert_eq!(ids.len(), expected, "{:?} found {:?}", request.query, response.hits);
            return ids;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn ids(messages: &[&Message]) -> Vec<String> {
    messages.iter().map(|m| m.message_id.clone()).collect()
}

#[tokio::test]
async fn words_phrases_prefixes_accents_and_cjk_are_found_and_marked() {
    let app = TestApp::spawn().await;
    let ann = app.register("ann").await;
    let room = app.create_channel(&ann, "room", ChannelKind::Public, &[]).await;
    let deploy = app.send(&ann, &room.channel_id, "Deploying the release to production tonight").await;
    let cafe = app.send(&ann, &room.channel_id, "Lunch at the Café Crème? <b>bring</b> friends").await;
    let tokyo = app.send(&ann, &room.channel_id, "明日は東京都庁で会議です").await;
    let kana = app.send(&ann, &room.channel_id, "デプロイは完了しました").await;
    let korean = app.send(&ann, &room.channel_id, "배포가 완료되었습니다").await;
    app.send(&ann, &room.channel_id, "the production database is fine").await;

    assert_eq!(found(&app, &ann, query("deploy*"), 1).await, ids(&[&deploy]));
    assert_eq!(found(&app, &ann, query("\"release to production\""), 1).await, ids(&[&deploy]));
    assert_eq!(found(&app, &ann, query("production -database"), 1).await, ids(&[&deploy]));
    found(&app, &ann, query("production"), 2).await;
    found(&app, &ann, query("deploy"), 0).await;
    // Accents and case fold both ways.
    assert_eq!(found(&app, &ann, query("cafe creme"), 1).await, ids(&[&cafe]));
    assert_eq!(found(&app, &ann, query("CAFÉ"), 1).await, ids(&[&cafe]));
    // CJK: found by what a person types, without spaces between words.
    assert_eq!(found(&app, &ann, query("東京"), 1).await, ids(&[&tokyo]));
    assert_eq!(found(&app, &ann, query("会議"), 1).await, ids(&[&tokyo]));
    assert_eq!(found(&app, &ann, query("東京都庁"), 1).await, ids(&[&tokyo]));
    found(&app, &ann, query("京都庁舎"), 0).await;
    assert_eq!(found(&app, &ann, query("デプロイ"), 1).await, ids(&[&kana]));
    assert_eq!(found(&app, &ann, query("완료"), 1).await, ids(&[&korean]));

    // Highlights mark the match, escaped, with offsets a browser can slice by.
    let hit = search(&app, &ann, query("creme")).await.hits.remove(0);
    assert_eq!(hit.snippet, cafe.text);
    let highlight = &hit.highlights[0];
    assert_eq!(highlight.field, "text");
    assert_eq!(highlight.fragments, ["Lunch at the Café <em>Crème</em>? &lt;b&gt;bring&lt;/b&gt; friends"]);
    let excerpt = &highlight.excerpts[0];
    let units: Vec<u16> = excerpt.text.encode_utf16().collect();
    let range = &excerpt.matches[0];
    assert_eq!(String::from_utf16_lossy(&units[range.start as usize..range.end as usize]), "Crème");
    let tokyo_hit = search(&app, &ann, query("東京")).await.hits.remove(0);
    assert_eq!(tokyo_hit.highlights[0].fragments, ["明日は<em>東京</em>都庁で会議です"]);
}

#[tokio::test]
async fn filters_work_as_operators_and_as_fields() {
    let app = TestApp::spawn().await;
    let ann = app.register("ann").await;
    let bob = app.register("bob").await;
    let general = app.create_channel(&ann, "general", ChannelKind::Public, &[&bob]).await;
    let random = app.create_channel(&ann, "random", ChannelKind::Public, &[&bob]).await;
    let root = app.send(&ann, &general.channel_id, "status report for the week").await;
    let link = app.send(&bob, &general.channel_id, "status page at https://status.example.com").await;
    let elsewhere = app.send(&bob, &random.channel_id, "status of lunch").await;
    let reply = SendMessageRequest {
        channel_id: general.channel_id.clone(),
        thread_id: root.message_id.clone(),
        text: "status: all green".into(),
        ..Default::default()
    };
    let reply = app.messaging().send_message(bob.req(reply)).await.unwrap().into_inner().message.unwrap();
    found(&app, &ann, query("status"), 4).await;

    let mut from_bob = found(&app, &ann, query("status from:@bob"), 3).await;
    from_bob.sort();
    let mut expected = ids(&[&link, &elsewhere, &reply]);
    expected.sort();
    assert_eq!(from_bob, expected);
    let by_field = SearchMessagesRequest { from_user_id: ann.user_id.clone(), ..query("status") };
    assert_eq!(found(&app, &ann, by_field, 1).await, ids(&[&root]));
    assert_eq!(found(&app, &ann, query("status in:#random"), 1).await, ids(&[&elsewhere]));
    let by_channel = SearchMessagesRequest { channel_id: random.channel_id.clone(), ..query("status") };
    assert_eq!(found(&app, &ann, by_channel, 1).await, ids(&[&elsewhere]));
    assert_eq!(found(&app, &ann, query("status has:link"), 1).await, ids(&[&link]));
    let by_flag = SearchMessagesRequest { has_link: true, ..query("status") };
    assert_eq!(found(&app, &ann, by_flag, 1).await, ids(&[&link]));
    assert_eq!(found(&app, &ann, query("status is:thread"), 1).await, ids(&[&reply]));
    let in_thread = SearchMessagesRequest { thread_id: root.message_id.clone(), ..query("status") };
    assert_eq!(found(&app, &ann, in_thread, 1).await, ids(&[&reply]));
    // Filters narrow each other; filters alone find everything they pass.
    found(&app, &ann, query("status from:@ann from:@bob"), 0).await;
    found(&app, &ann, query("from:@bob in:#general"), 2).await;
    // Dates are whole days in UTC.
    found(&app, &ann, query("status after:2000-01-01"), 4).await;
    found(&app, &ann, query("status before:2000-01-01"), 0).await;
    let today = colink_runtime::ids::now_micros() / 86_400_000_000;
    let day = |offset: i64| {
        let days = today + offset;
        // Civil date of a day number (1970-01-01 is 0).
        let z = days + 719_468;
        let era = z.div_euclid(146_097);
        let doe = z - era * 146_097;
        let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
        let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
        let mp = (5 * doy + 2) / 153;
        let d = doy - (153 * mp + 2) / 5 + 1;
        let m = if mp < 10 { mp + 3 } else { mp - 9 };
        let y = yoe + era * 400 + i64::from(m <= 2);
        format!("{y:04}-{m:02}-{d:02}")
    };
    found(&app, &ann, query(&format!("status on:{}", day(0))), 4).await;
    found(&app, &ann, query(&format!("status after:{}", day(0))), 0).await;
    found(&app, &ann, query(&format!("status before:{}", day(1))), 4).await;
    found(&app, &ann, query(&format!("status before:{}", day(0))), 0).await;
}

#[tokio::test]
async fn attachments_are_found_with_has_file() {
    let app = TestApp::spawn().await;
    let ann = app.register("ann").await;
    let room = app.create_channel(&ann, "room", ChannelKind::Public, &[]).await;
    let bytes = b"quarterly numbers\n";
    let file = crate::files::upload(
        &app,
        &ann,
        crate::files::upload_request("numbers.txt", "text/plain", bytes, &room.channel_id),
        bytes,
    )
    .await;
    let with_file = SendMessageRequest {
        channel_id: room.channel_id.clone(),
        text: "the quarterly numbers".into(),
        file_ids: vec![file.file_id.clone()],
        ..Default::default()
    };
    let with_file = app.messaging().send_message(ann.req(with_file)).await.unwrap().into_inner().message.unwrap();
    app.send(&ann, &room.channel_id, "quarterly numbers come tomorrow").await;
    found(&app, &ann, query("quarterly"), 2).await;
    assert_eq!(found(&app, &ann, query("quarterly has:file"), 1).await, ids(&[&with_file]));
    let by_field = SearchMessagesRequest { has_file: true, ..query("quarterly") };
    let response = search(&app, &ann, by_field).await;
    assert_eq!(response.hits.len(), 1);
    assert!(response.hits[0].has_files);
}

#[tokio::test]
async fn only_members_find_messages_and_leaving_takes_them_away() {
    let app = TestApp::spawn().await;
    let ann = app.register("ann").await;
    let bob = app.register("bob").await;
    let eve = app.register("eve").await;
    let secret = app.create_channel(&ann, "secret", ChannelKind::Private, &[&bob]).await;
    let open = app.create_channel(&ann, "open", ChannelKind::Public, &[]).await;
    let private = app.send(&ann, &secret.channel_id, "the merger codename is bluebird").await;
    let public = app.send(&ann, &open.channel_id, "bluebird sightings in the park").await;
    let dm = SendMessageRequest {
        recipient_id: bob.user_id.clone(),
        text: "bluebird between us".into(),
        ..Default::default()
    };
    let dm = app.messaging().send_message(ann.req(dm)).await.unwrap().into_inner().message.unwrap();
    found(&app, &ann, query("bluebird"), 3).await;

    // An outsider finds nothing private: not the channel, not the DM, and
    // not a public channel they have not joined.
    assert!(search(&app, &eve, query("bluebird")).await.hits.is_empty());
    assert_eq!(search(&app, &eve, query("bluebird")).await.total_estimate, 0);
    let aimed = SearchMessagesRequest { channel_id: secret.channel_id.clone(), ..query("bluebird") };
    assert_code(app.search().search_messages(eve.req(aimed)).await, Code::NotFound);
    let aimed = SearchMessagesRequest { channel_id: open.channel_id.clone(), ..query("bluebird") };
    assert_code(app.search().search_messages(eve.req(aimed)).await, Code::PermissionDenied);
    let by_name = app.search().search_messages(eve.req(query("bluebird in:#secret"))).await;
    assert_invalid(by_name, "query");
    // Joining the public channel shows its messages.
    let join = JoinChannelRequest { channel_id: open.channel_id.clone(), ..Default::default() };
    app.channels().join_channel(eve.req(join)).await.unwrap();
    assert_eq!(found(&app, &eve, query("bluebird"), 1).await, ids(&[&public]));

    // Bob, in the private channel and the DM, finds both.
    let mut bobs = found(&app, &bob, query("bluebird"), 2).await;
    bobs.sort();
    let mut expected = ids(&[&private, &dm]);
    expected.sort();
    assert_eq!(bobs, expected);
    // Having left, he finds none of the channel's messages, old ones included.
    let leave = LeaveChannelRequest { channel_id: secret.channel_id.clone(), ..Default::default() };
    app.channels().leave_channel(bob.req(leave)).await.unwrap();
    assert_eq!(found(&app, &bob, query("bluebird"), 1).await, ids(&[&dm]));
}

#[tokio::test]
async fn deleted_recalled_and_edited_messages_change_at_once() {
    let app = TestApp::spawn().await;
    let ann = app.register("ann").await;
    let room = app.create_channel(&ann, "room", ChannelKind::Public, &[]).await;
    let deleted = app.send(&ann, &room.channel_id, "pineapple one").await;
    let recalled = app.send(&ann, &room.channel_id, "pineapple two").await;
    let edited = app.send(&ann, &room.channel_id, "pineapple three").await;
    found(&app, &ann, query("pineapple"), 3).await;

    let delete = DeleteMessageRequest { message_id: deleted.message_id.clone(), ..Default::default() };
    app.messaging().delete_message(ann.req(delete)).await.unwrap();
    let recall = RecallMessageRequest { message_id: recalled.message_id.clone(), ..Default::default() };
    app.messaging().recall_message(ann.req(recall)).await.unwrap();
    let edit =
        EditMessageRequest { message_id: edited.message_id.clone(), text: "mango three".into(), ..Default::default() };
    app.messaging().edit_message(ann.req(edit)).await.unwrap();
    // Straight after the acknowledgements, whatever the index has heard yet.
    assert!(search(&app, &ann, query("pineapple")).await.hits.is_empty());
    // The new text is found once indexed, shown as it is now.
    assert_eq!(found(&app, &ann, query("mango"), 1).await, ids(&[&edited]));
    assert_eq!(search(&app, &ann, query("mango")).await.hits[0].snippet, "mango three");
}

#[tokio::test]
async fn pages_are_stable_in_every_order() {
    let app = TestApp::spawn().await;
    let ann = app.register("ann").await;
    for order in [SearchOrder::Relevance, SearchOrder::Newest, SearchOrder::Oldest] {
        let room = app.create_channel(&ann, &format!("room-{}", order as i32), ChannelKind::Public, &[]).await;
        let mut sent = Vec::new();
        for i in 0..7 {
            // Different lengths give different relevance scores.
            let filler = "and more ".repeat(i);
            sent.push(app.send(&ann, &room.channel_id, &format!("kiwi {filler}{i}")).await.message_id);
        }
        let kiwi = SearchMessagesRequest { channel_id: room.channel_id.clone(), ..query("kiwi") };
        found(&app, &ann, kiwi.clone(), 7).await;
        let mut seen = Vec::new();
        let mut token = String::new();
        let mut pages = 0;
        loop {
            let request =
                SearchMessagesRequest { order: order as i32, page_size: 3, page_token: token, ..kiwi.clone() };
            let page = search(&app, &ann, request).await;
            assert_eq!(page.total_estimate, 7, "{order:?}");
            seen.extend(page.hits.iter().map(|h| h.message_id.clone()));
            pages += 1;
            // Messages arriving between pages do not move what is paged.
            app.send(&ann, &room.channel_id, "kiwi arriving late").await;
            tokio::time::sleep(Duration::from_millis(100)).await;
            if page.next_page_token.is_empty() {
                break;
            }
            token = page.next_page_token;
        }
        assert_eq!(pages, 3, "{order:?}");
        let expected: Vec<String> = match order {
            // The shortest text scores best, and is the oldest here.
            SearchOrder::Oldest | SearchOrder::Relevance => sent.clone(),
            _ => sent.iter().rev().cloned().collect(),
        };
        assert_eq!(seen, expected, "{order:?}");
    }
}

#[tokio::test]
async fn the_seed_parameter_names_work_too() {
    let app = TestApp::spawn().await;
    let ann = app.register("ann").await;
    let room = app.create_channel(&ann, "room", ChannelKind::Public, &[]).await;
    for _ in 0..3 {
        app.send(&ann, &room.channel_id, "urgent: coffee machine").await;
    }
    found(&app, &ann, query("urgent"), 3).await;
    let seed = SearchMessagesRequest {
        q: "urgent".into(),
        limit: 2,
        channel_id: room.channel_id.clone(),
        ..Default::default()
    };
    let page = search(&app, &ann, seed).await;
    assert_eq!(page.hits.len(), 2);
    assert!(!page.next_page_token.is_empty());
}

#[tokio::test]
async fn bad_searches_name_their_field() {
    let app = TestApp::spawn().await;
    let ann = app.register("ann").await;
    let room = app.create_channel(&ann, "room", ChannelKind::Public, &[]).await;
    app.send(&ann, &room.channel_id, "hello").await;
    let bad = |request: SearchMessagesRequest| {
        let mut client = app.search();
        let request = ann.req(request);
        async move { client.search_messages(request).await }
    };
    assert_invalid(bad(query("")).await, "query");
    assert_invalid(bad(query("   ")).await, "query");
    assert_invalid(bad(query(&"x".repeat(501))).await, "query");
    assert_invalid(bad(query("!!!")).await, "query");
    assert_invalid(bad(query("hello has:cats")).await, "query");
    assert_invalid(bad(query("hello before:yesterday")).await, "query");
    assert_invalid(bad(query("hello from:@nobody")).await, "query");
    assert_invalid(bad(query("hello in:#nowhere")).await, "query");
    assert_invalid(bad(SearchMessagesRequest { q: "other".into(), ..query("hello") }).await, "q");
    assert_invalid(bad(SearchMessagesRequest { page_size: 101, ..query("hello") }).await, "page_size");
    assert_invalid(bad(SearchMessagesRequest { limit: -1, ..Default::default() }).await, "limit");
    assert_invalid(bad(SearchMessagesRequest { page_size: 5, limit: 6, ..query("hello") }).await, "limit");
    assert_invalid(bad(SearchMessagesRequest { channel_id: "nope".into(), ..query("hello") }).await, "channel_id");
    assert_invalid(bad(SearchMessagesRequest { from_user_id: "nope".into(), ..query("hello") }).await, "from_user_id");
    assert_invalid(bad(SearchMessagesRequest { order: 9, ..query("hello") }).await, "order");
    assert_invalid(bad(SearchMessagesRequest { page_token: "%%%".into(), ..query("hello") }).await, "page_token");
    let later = prost_types::Timestamp { seconds: 2_000_000_000, nanos: 0 };
    let earlier = prost_types::Timestamp { seconds: 1_000_000_000, nanos: 0 };
    let reversed = SearchMessagesRequest { after: Some(later), before: Some(earlier), ..query("hello") };
    assert_invalid(bad(reversed).await, "after");
    // A page token only continues the search it came from.
    for _ in 0..2 {
        app.send(&ann, &room.channel_id, "hello").await;
    }
    found(&app, &ann, query("hello"), 3).await;
    let first = search(&app, &ann, SearchMessagesRequest { page_size: 1, ..query("hello") }).await;
    let other = SearchMessagesRequest { page_token: first.next_page_token, ..query("hello world") };
    assert_invalid(bad(other).await, "page_token");
    // Searching is read-only: asking again gives the same answer.
    let again = search(&app, &ann, SearchMessagesRequest { page_size: 1, ..query("hello") }).await;
    assert_eq!(
        again.hits[0].message_id,
        search(&app, &ann, SearchMessagesRequest { page_size: 1, ..query("hello") }).await.hits[0].message_id
    );
}

#[tokio::test]
async fn indexing_resumes_after_a_restart_and_loses_nothing() {
    let app = TestApp::spawn().await;
    let ann = app.register("ann").await;
    let room = app.create_channel(&ann, "room", ChannelKind::Public, &[]).await;
    for i in 0..50 {
        app.send(&ann, &room.channel_id, &format!("persimmon {i}")).await;
    }
    // Stopped at once: some changes may still wait in the queue.
    let app = app.restart(|_| {}).await;
    let everything = SearchMessagesRequest { page_size: 100, ..query("persimmon") };
    found(&app, &ann, everything, 50).await;
}

/// Every id a query finds, page by page, once the index shows `expected`.
async fn all_found(app: &TestApp, user: &TestUser, text: &str, expected: usize) -> Vec<String> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let mut ids = Vec::new();
        let mut page_token = String::new();
        loop {
            let request =
                SearchMessagesRequest { page_size: 100, page_token, order: SearchOrder::Oldest as i32, ..query(text) };
            let page = search(app, user, request).await;
            ids.extend(page.hits.into_iter().map(|h| h.message_id));
            if page.next_page_token.is_empty() {
                break;
            }
            page_token = page.next_page_token;
        }
        if ids.len() == expected || tokio::time::Instant::now() > deadline {
            ids.sort();
            return ids;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn a_reindex_while_traffic_flows_loses_nothing() {
    let app = TestApp::spawn().await;
    let root = app.register("root").await;
    let ann = app.register("ann").await;
    let room = app.create_channel(&ann, "room", ChannelKind::Public, &[&root]).await;
    let mut live = Vec::new();
    for i in 0..200 {
        live.push(app.send(&ann, &room.channel_id, &format!("quince history {i}")).await.message_id);
    }
    let bytes = b"quince jam\n";
    let request = crate::files::upload_request("quince-jam.txt", "text/plain", bytes, &room.channel_id);
    let jam = crate::files::upload(&app, &ann, request, bytes).await;
    // Outsiders may not start, follow or feed a rebuild.
    assert_code(app.search().start_reindex(ann.req(StartReindexRequest {})).await, Code::PermissionDenied);
    assert_code(app.search().get_reindex(ann.req(GetReindexRequest {})).await, Code::PermissionDenied);
    let export = ExportMessagesRequest::default();
    assert_code(app.messaging().export_messages(ann.req(export)).await, Code::PermissionDenied);
    let before = app.search().get_reindex(root.req(GetReindexRequest {})).await.unwrap().into_inner().reindex;
    assert_eq!(before.unwrap_or_default().state, ReindexState::Unspecified as i32);

    // Sends, edits and deletions go on while the index is rebuilt.
    let done = std::sync::atomic::AtomicBool::new(false);
    let traffic = async {
        let mut sent = Vec::new();
        let mut edited = Vec::new();
        let mut deleted = Vec::new();
        let mut during = 0;
        let mut i = 0;
        while i < 600 && !(done.load(std::sync::atomic::Ordering::SeqCst) && i >= 100) {
            let m = app.send(&ann, &room.channel_id, &format!("quince traffic {i}")).await;
            sent.push(m.message_id);
            if !done.load(std::sync::atomic::Ordering::SeqCst) {
                during += 1;
            }
            if i % 7 == 3 {
                let message_id = sent.remove(0);
                let edit = EditMessageRequest {
                    message_id: message_id.clone(),
                    text: format!("medlar {i}"),
                    ..Default::default()
                };
                app.messaging().edit_message(ann.req(edit)).await.unwrap();
                edited.push(message_id);
            }
            if i % 11 == 5 {
                let message_id = sent.remove(0);
                let delete = DeleteMessageRequest { message_id: message_id.clone(), ..Default::default() };
                app.messaging().delete_message(ann.req(delete)).await.unwrap();
                deleted.push(message_id);
            }
            i += 1;
        }
        (sent, edited, deleted, during)
    };
    let rebuild = async {
        let started = app.search().start_reindex(root.req(StartReindexRequest {})).await.unwrap().into_inner();
        assert_eq!(started.reindex.unwrap_or_default().state, ReindexState::Running as i32);
        // Starting again while it runs returns the same rebuild.
        let again = app.search().start_reindex(root.req(StartReindexRequest {})).await.unwrap().into_inner();
        let again = again.reindex.unwrap_or_default();
        assert!(again.state != ReindexState::Unspecified as i32, "{again:?}");
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        loop {
            let report = app.search().get_reindex(root.req(GetReindexRequest {})).await.unwrap().into_inner();
            let report = report.reindex.unwrap_or_default();
            if report.state != ReindexState::Running as i32 || tokio::time::Instant::now() > deadline {
                done.store(true, std::sync::atomic::Ordering::SeqCst);
                return report;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    };
    let ((sent, edited, deleted, during), report) = tokio::join!(traffic, rebuild);
    assert_eq!(report.state, ReindexState::Succeeded as i32, "{report:?}");
    assert!(during > 0, "nothing was sent while the index was rebuilt");
    assert!(report.messages >= 200 && report.users == 2 && report.files == 1, "{report:?}");
    assert!(report.end_time.is_some());

    let mut quinces: Vec<String> = live.iter().chain(&sent).cloned().collect();
    quinces.sort();
    let mut medlars = edited.clone();
    medlars.sort();
    assert_eq!(all_found(&app, &root, "quince", quinces.len()).await, quinces);
    assert_eq!(all_found(&app, &root, "medlar", medlars.len()).await, medlars);
    assert!(!deleted.is_empty());
    // The rebuilt index is the one a restart opens, people included.
    let app = app.restart(|_| {}).await;
    assert_eq!(all_found(&app, &root, "quince", quinces.len()).await, quinces);
    assert_eq!(people(&app, &root, "ann", 1).await, ["ann"]);
    let files = SearchFilesRequest { query: "quince".into(), ..Default::default() };
    let files = app.search().search_files(ann.req(files)).await.unwrap().into_inner().hits;
    assert_eq!(files.iter().map(|f| f.file_id.as_str()).collect::<Vec<_>>(), [jam.file_id.as_str()]);
    let current = std::fs::read_to_string(app.config().data_dir.join("search/CURRENT")).expect("a rebuilt generation");
    assert_eq!(current, "1");
}

/// `colink search reindex`, as the command runs it.
#[tokio::test]
async fn the_reindex_command_follows_a_rebuild_to_its_end() {
    let app = TestApp::spawn().await;
    let root = app.register("root").await;
    let ann = app.register("ann").await;
    let room = app.create_channel(&ann, "room", ChannelKind::Public, &[]).await;
    app.send(&ann, &room.channel_id, "quince").await;
    colink::search_cli::reindex(&app.uri(), root.token()).await.expect("the rebuild succeeds");
    let report = app.search().get_reindex(root.req(GetReindexRequest {})).await.unwrap().into_inner();
    let report = report.reindex.unwrap_or_default();
    assert_eq!((report.state, report.messages, report.users), (ReindexState::Succeeded as i32, 1, 2));
    let refused = colink::search_cli::reindex(&app.uri(), ann.token()).await.expect_err("not an admin");
    assert!(refused.contains("only admins"), "{refused}");
    let unreachable = colink::search_cli::reindex("http://127.0.0.1:1", root.token()).await.expect_err("no node");
    assert!(unreachable.contains("cannot reach"), "{unreachable}");
}

#[tokio::test]
async fn the_export_pages_through_live_messages_in_id_order() {
    let app = TestApp::spawn().await;
    let root = app.register("root").await;
    let room = app.create_channel(&root, "room", ChannelKind::Public, &[]).await;
    let mut kept = Vec::new();
    for i in 0..5 {
        let m = app.send(&root, &room.channel_id, &format!("m{i}")).await;
        if i == 2 {
            let delete = DeleteMessageRequest { message_id: m.message_id, ..Default::default() };
            app.messaging().delete_message(root.req(delete)).await.unwrap();
        } else {
            kept.push(m.message_id);
        }
    }
    let mut seen = Vec::new();
    let mut page_token = String::new();
    loop {
        let request = ExportMessagesRequest { page_size: 2, page_token };
        let page = app.messaging().export_messages(root.req(request)).await.unwrap().into_inner();
        assert!(page.messages.len() <= 2);
        seen.extend(page.messages.into_iter().map(|m| (m.message_id, m.text)));
        if page.next_page_token.is_empty() {
            break;
        }
        page_token = page.next_page_token;
    }
    let ids: Vec<String> = seen.iter().map(|(id, _)| id.clone()).collect();
    assert_eq!(ids, kept);
    assert_eq!(seen[0].1, "m0");
    let bad = |request: ExportMessagesRequest| {
        let mut client = app.messaging();
        let request = root.req(request);
        async move { client.export_messages(request).await }
    };
    assert_invalid(bad(ExportMessagesRequest { page_size: 1001, ..Default::default() }).await, "page_size");
    assert_invalid(bad(ExportMessagesRequest { page_token: "%%%".into(), ..Default::default() }).await, "page_token");
    let not_an_id = colink_runtime::ids::encode_page_token("not-an-id");
    assert_invalid(bad(ExportMessagesRequest { page_token: not_an_id, ..Default::default() }).await, "page_token");
}

async fn people(app: &TestApp, user: &TestUser, text: &str, expected: usize) -> Vec<String> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let request = SearchUsersRequest { query: text.into(), ..Default::default() };
        let response = app.search().search_users(user.req(request)).await.unwrap().into_inner();
        if response.hits.len() == expected || tokio::time::Instant::now() > deadline {
            let names: Vec<String> = response.hits.iter().map(|h| h.username.clone()).collect();
            assert_eq!(names.len(), expected, "{text:?} found {names:?}");
            return names;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn people_are_found_as_their_names_are_typed() {
    let app = TestApp::spawn().await;
    let admin = app.register("root").await;
    let anna = app.register("anna").await;
    app.register("annabel").await;
    let bob = app.register("bob").await;
    let rename = UpdateMeRequest {
        user: Some(User { display_name: "Bob Ännandale".into(), ..Default::default() }),
        update_mask: Some(prost_types::FieldMask { paths: vec!["display_name".into()] }),
    };
    app.users().update_me(bob.req(rename)).await.unwrap();
    // A whole word ranks above the words it starts; the display name counts.
    let found = people(&app, &anna, "ann", 3).await;
    assert_eq!(found.len(), 3);
    assert_eq!(people(&app, &anna, "anna", 3).await[0], "anna");
    assert_eq!(people(&app, &anna, "@annab", 1).await, ["annabel"]);
    assert_eq!(people(&app, &anna, "bob ann", 1).await, ["bob"]);
    // The name as it is now: the old one no longer finds him.
    let hits = app
        .search()
        .search_users(anna.req(SearchUsersRequest { query: "annandale".into(), ..Default::default() }))
        .await
        .unwrap()
        .into_inner()
        .hits;
    assert_eq!(hits[0].display_name, "Bob Ännandale");
    assert_eq!(hits[0].highlights[0].field, "display_name");
    assert_eq!(hits[0].highlights[0].fragments, ["Bob <em>Ännandale</em>"]);
    let rename = UpdateMeRequest {
        user: Some(User { display_name: "Robert".into(), ..Default::default() }),
        update_mask: Some(prost_types::FieldMask { paths: vec!["display_name".into()] }),
    };
    app.users().update_me(bob.req(rename)).await.unwrap();
    people(&app, &anna, "annandale", 0).await;
    assert_eq!(people(&app, &anna, "robert", 1).await, ["bob"]);
    // Pages.
    let first = SearchUsersRequest { query: "ann".into(), page_size: 1, ..Default::default() };
    let first = app.search().search_users(anna.req(first)).await.unwrap().into_inner();
    assert_eq!(first.hits.len(), 1);
    assert!(!first.next_page_token.is_empty());
    let next = SearchUsersRequest {
        query: "ann".into(),
        page_size: 1,
        page_token: first.next_page_token,
        ..Default::default()
    };
    let next = app.search().search_users(anna.req(next)).await.unwrap().into_inner();
    assert_eq!(next.hits.len(), 1);
    assert!(next.next_page_token.is_empty());
    let mut all: Vec<String> = first.hits.iter().chain(&next.hits).map(|h| h.username.clone()).collect();
    all.sort();
    assert_eq!(all, ["anna", "annabel"]);
    // Deactivated accounts are for admins to ask for.
    let asked = SearchUsersRequest { query: "ann".into(), include_deactivated: true, ..Default::default() };
    assert_code(app.search().search_users(anna.req(asked.clone())).await, Code::PermissionDenied);
    assert_eq!(app.search().search_users(admin.req(asked)).await.unwrap().into_inner().hits.len(), 2);
}

#[tokio::test]
async fn bad_people_searches_name_their_field() {
    let app = TestApp::spawn().await;
    let ann = app.register("ann").await;
    let bad = |request: SearchUsersRequest| {
        let mut client = app.search();
        let request = ann.req(request);
        async move { client.search_users(request).await }
    };
    assert_invalid(bad(SearchUsersRequest::default()).await, "query");
    assert_invalid(bad(SearchUsersRequest { query: "@".into(), ..Default::default() }).await, "query");
    assert_invalid(bad(SearchUsersRequest { query: "x".repeat(101), ..Default::default() }).await, "query");
    assert_invalid(bad(SearchUsersRequest { query: "a".into(), q: "b".into(), ..Default::default() }).await, "q");
    assert_invalid(
        bad(SearchUsersRequest { query: "a".into(), page_size: 101, ..Default::default() }).await,
        "page_size",
    );
    assert_invalid(
        bad(SearchUsersRequest { query: "a".into(), page_token: "%".into(), ..Default::default() }).await,
        "page_token",
    );
    // The seed's names work as well.
    let seed = SearchUsersRequest { q: "an".into(), limit: 1, ..Default::default() };
    assert!(bad(seed).await.is_ok());
}

/// Against a real Elasticsearch or OpenSearch, when COLINK_TEST_ELASTICSEARCH
/// names one (none installs on the CI machines): words, CJK, membership,
/// deletion and people, through a node whose index is the cluster.
#[tokio::test]
async fn an_elasticsearch_or_opensearch_cluster_serves_the_same_searches() {
    let Ok(url) = std::env::var("COLINK_TEST_ELASTICSEARCH") else {
        eprintln!("COLINK_TEST_ELASTICSEARCH is not set: the cluster is not exercised");
        return;
    };
    let prefix = format!("colink-test-{}", uuid::Uuid::now_v7().simple());
    let app = TestApp::spawn_with(|c| {
        c.search.url = url;
        c.search.index_prefix = prefix;
    })
    .await;
    let ann = app.register("ann").await;
    let bob = app.register("bob").await;
    let secret = app.create_channel(&ann, "secret", ChannelKind::Private, &[]).await;
    let open = app.create_channel(&ann, "open", ChannelKind::Public, &[&bob]).await;
    let cafe = app.send(&ann, &open.channel_id, "Lunch at the Café Crème").await;
    let tokyo = app.send(&ann, &open.channel_id, "明日は東京都庁で会議です").await;
    let hidden = app.send(&ann, &secret.channel_id, "crème brûlée recipe").await;
    // The cluster makes changes searchable about a second after they are written.
    assert_eq!(found(&app, &bob, query("creme"), 1).await, ids(&[&cafe]));
    assert_eq!(found(&app, &bob, query("東京"), 1).await, ids(&[&tokyo]));
    let mut anns = found(&app, &ann, query("creme"), 2).await;
    anns.sort();
    let mut expected = ids(&[&cafe, &hidden]);
    expected.sort();
    assert_eq!(anns, expected);
    let delete = DeleteMessageRequest { message_id: cafe.message_id.clone(), ..Default::default() };
    app.messaging().delete_message(ann.req(delete)).await.unwrap();
    assert!(search(&app, &bob, query("creme")).await.hits.is_empty());
    assert_eq!(people(&app, &ann, "bo", 1).await, ["bob"]);
}
