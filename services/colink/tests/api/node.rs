use colink_proto::auth::v1::GetJwksRequest;
use colink_proto::channels::v1::{ChannelKind, ListMyChannelsRequest};
use colink_proto::realtime::v1::server_frame::Frame;
use tonic::Code;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

use crate::helpers::{TestApp, assert_code, frame};

#[tokio::test]
async fn every_hosted_service_reports_serving() {
    let app = TestApp::spawn().await;
    let mut health = HealthClient::new(app.channel.clone());
    for service in [
        "",
        "colink.auth.v1.AuthService",
        "colink.users.v1.UsersService",
        "colink.channels.v1.ChannelsService",
        "colink.messaging.v1.MessagingService",
        "colink.realtime.v1.RealtimeService",
    ] {
        let status = health.check(HealthCheckRequest { service: service.into() }).await.unwrap().into_inner().status;
        assert_eq!(status, ServingStatus::Serving as i32, "{service}");
    }
}

#[tokio::test]
async fn a_node_hosts_only_the_services_it_is_given() {
    let app = TestApp::spawn_with(|c| c.services = vec!["auth".into()]).await;
    assert!(app.auth().get_jwks(GetJwksRequest {}).await.is_ok());
    assert_code(app.channels().list_my_channels(ListMyChannelsRequest::default()).await, Code::Unauthenticated);
    let alice = app.register("alice").await;
    assert_code(
        app.channels().list_my_channels(alice.req(ListMyChannelsRequest::default())).await,
        Code::Unimplemented,
    );
}

#[tokio::test]
async fn shutdown_tells_streams_to_resume_elsewhere() {
    let mut app = TestApp::spawn().await;
    let alice = app.register("alice").await;
    let room = app.create_channel(&alice, "room", ChannelKind::Public, &[]).await;
    let mut stream = app.subscribe(&alice, &room.channel_id, None).await;
    let node = app.node.take().unwrap();
    let stopping = tokio::spawn(node.shutdown());
    match frame(&mut stream).await {
        Frame::ResumeRequired(r) => {
            assert_eq!(r.reason, "shutdown");
            assert_eq!(r.cursors.len(), 1);
        }
        other => panic!("expected a resume hint, got {other:?}"),
    }
    stopping.await.unwrap().unwrap();
}
