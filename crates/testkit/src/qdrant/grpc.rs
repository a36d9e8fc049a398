//! The gRPC side: Qdrant's own service traits (generated in `qdrant-client`) implemented over
//! the shared store, and a tower layer that checks the API key and counts responses.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

use qdrant_client::qdrant as pb;
use qdrant_client::qdrant::collections_server::Collections;
use qdrant_client::qdrant::points_server::Points;
use qdrant_client::qdrant::qdrant_server::Qdrant;
use tonic::codegen::http;
use tonic::{Request, Response, Status};

use super::Shared;
use super::auth::grpc_path_is_open;
use super::filter::{Condition, FieldCheck, Filter, Match, Range};
use super::store::{
    CollectionSummary, Distance, NewPoint, Payload, Point, PointId, Search, Selector, StoreError,
    VectorParams, WithPayload,
};

/// How many points a query or scroll returns when the request says nothing.
const DEFAULT_LIMIT: usize = 10;

/// `qdrant.Qdrant`, `qdrant.Collections` and `qdrant.Points`, over one shared state.
#[derive(Clone)]
pub(crate) struct Service {
    shared: Arc<Shared>,
}

impl Service {
    pub(crate) fn new(shared: Arc<Shared>) -> Self {
        Self { shared }
    }
}

type GrpcResult<T> = Result<Response<T>, Status>;

/// The gRPC status Qdrant answers each store error with.
fn status(error: StoreError) -> Status {
    let message = error.message();
    match error {
        StoreError::NotFound(_) | StoreError::PointNotFound(_) => Status::not_found(message),
        StoreError::AlreadyExists(_) => Status::already_exists(message),
        StoreError::Dimension { .. }
        | StoreError::VectorName(_)
        | StoreError::BadInput(_)
        | StoreError::Validation(_) => Status::invalid_argument(message),
        StoreError::Unsupported(_) => Status::unimplemented(message),
    }
}

/// The answer to an RPC the fixture does not implement.
fn unsupported_rpc(path: &str) -> Status {
    Status::unimplemented(format!(
        "{path} is not implemented by the Qdrant fixture of citadel-itest"
    ))
}

fn unsupported(what: &str) -> StoreError {
    StoreError::Unsupported(what.to_owned())
}

fn elapsed(started: Instant) -> f64 {
    started.elapsed().as_secs_f64()
}

/// Implements RPCs as `UNIMPLEMENTED` answers. The signatures are what `#[async_trait]` makes
/// of the generated trait's `async fn`s, so the macro can sit inside an `#[async_trait]` impl.
macro_rules! unsupported_rpcs {
    ($service:literal; $($method:ident($req:ident) -> $resp:ident = $name:literal;)*) => {
        $(
            fn $method<'life0, 'async_trait>(
                &'life0 self,
                _request: Request<pb::$req>,
            ) -> Pin<Box<dyn Future<Output = GrpcResult<pb::$resp>> + Send + 'async_trait>>
            where
                'life0: 'async_trait,
                Self: 'async_trait,
            {
                Box::pin(async move { Err(unsupported_rpc(concat!("/", $service, "/", $name))) })
            }
        )*
    };
}

#[tonic::async_trait]
impl Qdrant for Service {
    async fn health_check(
        &self,
        _request: Request<pb::HealthCheckRequest>,
    ) -> GrpcResult<pb::HealthCheckReply> {
        Ok(Response::new(pb::HealthCheckReply {
            title: super::TITLE.to_owned(),
            version: self.shared.version.clone(),
            commit: None,
        }))
    }
}

#[tonic::async_trait]
impl Collections for Service {
    async fn get(
        &self,
        request: Request<pb::GetCollectionInfoRequest>,
    ) -> GrpcResult<pb::GetCollectionInfoResponse> {
        let started = Instant::now();
        let name = request.into_inner().collection_name;
        let summary = self.shared.store.summary(&name).map_err(status)?;
        Ok(Response::new(pb::GetCollectionInfoResponse {
            result: Some(collection_info(summary)),
            time: elapsed(started),
        }))
    }

    async fn list(
        &self,
        _request: Request<pb::ListCollectionsRequest>,
    ) -> GrpcResult<pb::ListCollectionsResponse> {
        let started = Instant::now();
        let collections = self
            .shared
            .store
            .names()
            .into_iter()
            .map(|name| pb::CollectionDescription { name })
            .collect();
        Ok(Response::new(pb::ListCollectionsResponse {
            collections,
            time: elapsed(started),
        }))
    }

    async fn create(
        &self,
        request: Request<pb::CreateCollection>,
    ) -> GrpcResult<pb::CollectionOperationResponse> {
        let started = Instant::now();
        let request = request.into_inner();
        let params = create_params(&request).map_err(status)?;
        self.shared
            .store
            .create(&request.collection_name, params)
            .map_err(status)?;
        Ok(Response::new(pb::CollectionOperationResponse {
            result: true,
            time: elapsed(started),
        }))
    }

    async fn delete(
        &self,
        request: Request<pb::DeleteCollection>,
    ) -> GrpcResult<pb::CollectionOperationResponse> {
        let started = Instant::now();
        let result = self
            .shared
            .store
            .delete(&request.into_inner().collection_name);
        Ok(Response::new(pb::CollectionOperationResponse {
            result,
            time: elapsed(started),
        }))
    }

    async fn collection_exists(
        &self,
        request: Request<pb::CollectionExistsRequest>,
    ) -> GrpcResult<pb::CollectionExistsResponse> {
        let started = Instant::now();
        let exists = self
            .shared
            .store
            .exists(&request.into_inner().collection_name);
        Ok(Response::new(pb::CollectionExistsResponse {
            result: Some(pb::CollectionExists { exists }),
            time: elapsed(started),
        }))
    }

    unsupported_rpcs! { "qdrant.Collections";
        update(UpdateCollection) -> CollectionOperationResponse = "Update";
        update_aliases(ChangeAliases) -> CollectionOperationResponse = "UpdateAliases";
        list_collection_aliases(ListCollectionAliasesRequest) -> ListAliasesResponse
            = "ListCollectionAliases";
        list_aliases(ListAliasesRequest) -> ListAliasesResponse = "ListAliases";
        collection_cluster_info(CollectionClusterInfoRequest) -> CollectionClusterInfoResponse
            = "CollectionClusterInfo";
        update_collection_cluster_setup(UpdateCollectionClusterSetupRequest)
            -> UpdateCollectionClusterSetupResponse = "UpdateCollectionClusterSetup";
        create_shard_key(CreateShardKeyRequest) -> CreateShardKeyResponse = "CreateShardKey";
        delete_shard_key(DeleteShardKeyRequest) -> DeleteShardKeyResponse = "DeleteShardKey";
        list_shard_keys(ListShardKeysRequest) -> ListShardKeysResponse = "ListShardKeys";
    }
}

#[tonic::async_trait]
impl Points for Service {
    async fn upsert(
        &self,
        request: Request<pb::UpsertPoints>,
    ) -> GrpcResult<pb::PointsOperationResponse> {
        let started = Instant::now();
        let request = request.into_inner();
        if request.update_filter.is_some() {
            return Err(status(unsupported("upsert with `update_filter`")));
        }
        if request
            .update_mode
            .is_some_and(|m| m != pb::UpdateMode::Upsert as i32)
        {
            return Err(status(unsupported("upsert modes other than `Upsert`")));
        }
        let points = request
            .points
            .into_iter()
            .map(new_point)
            .collect::<Result<Vec<_>, _>>()
            .map_err(status)?;
        let operation = self
            .shared
            .store
            .upsert(&request.collection_name, points)
            .map_err(status)?;
        // Qdrant's upsert answer carries an empty `usage` (no hardware or inference figures).
        let mut response = operation_response(operation, request.wait, started);
        response.usage = Some(pb::Usage::default());
        Ok(Response::new(response))
    }

    async fn delete(
        &self,
        request: Request<pb::DeletePoints>,
    ) -> GrpcResult<pb::PointsOperationResponse> {
        let started = Instant::now();
        let request = request.into_inner();
        let selector = selector(request.points).map_err(status)?;
        let operation = self
            .shared
            .store
            .delete_points(&request.collection_name, &selector)
            .map_err(status)?;
        Ok(Response::new(operation_response(
            operation,
            request.wait,
            started,
        )))
    }

    async fn get(&self, request: Request<pb::GetPoints>) -> GrpcResult<pb::GetResponse> {
        let started = Instant::now();
        let request = request.into_inner();
        let ids = request
            .ids
            .into_iter()
            .map(|id| point_id(Some(id)))
            .collect::<Result<Vec<_>, _>>()
            .map_err(status)?;
        let with_payload = with_payload(request.with_payload, WithPayload::All);
        let with_vectors = with_vectors(request.with_vectors);
        let points = self
            .shared
            .store
            .get(&request.collection_name, &ids)
            .map_err(status)?;
        Ok(Response::new(pb::GetResponse {
            result: points
                .into_iter()
                .map(|p| retrieved_point(p, &with_payload, with_vectors))
                .collect(),
            time: elapsed(started),
            usage: None,
        }))
    }

    async fn search(&self, request: Request<pb::SearchPoints>) -> GrpcResult<pb::SearchResponse> {
        let started = Instant::now();
        let request = request.into_inner();
        check_vector_name(request.vector_name.as_deref()).map_err(status)?;
        if request.sparse_indices.is_some() {
            return Err(status(unsupported("sparse vectors")));
        }
        let search = Search {
            vector: request.vector,
            filter: request.filter.map(filter).transpose().map_err(status)?,
            limit: usize_from(request.limit),
            offset: request.offset.map_or(0, usize_from),
            score_threshold: request.score_threshold,
        };
        let result = self.scored(
            &request.collection_name,
            &search,
            request.with_payload,
            request.with_vectors,
            WithPayload::Nothing,
        )?;
        Ok(Response::new(pb::SearchResponse {
            result,
            time: elapsed(started),
            usage: None,
        }))
    }

    async fn scroll(&self, request: Request<pb::ScrollPoints>) -> GrpcResult<pb::ScrollResponse> {
        let started = Instant::now();
        let request = request.into_inner();
        if request.order_by.is_some() {
            return Err(status(unsupported("scroll with `order_by`")));
        }
        let filter = request.filter.map(filter).transpose().map_err(status)?;
        let offset = request
            .offset
            .map(|id| point_id(Some(id)))
            .transpose()
            .map_err(status)?;
        let limit = request
            .limit
            .map_or(DEFAULT_LIMIT, |l| usize_from(u64::from(l)));
        let with_payload = with_payload(request.with_payload, WithPayload::All);
        let with_vectors = with_vectors(request.with_vectors);
        let (points, next) = self
            .shared
            .store
            .scroll(
                &request.collection_name,
                filter.as_ref(),
                offset.as_ref(),
                limit,
            )
            .map_err(status)?;
        Ok(Response::new(pb::ScrollResponse {
            next_page_offset: next.map(point_id_to_pb),
            result: points
                .into_iter()
                .map(|p| retrieved_point(p, &with_payload, with_vectors))
                .collect(),
            time: elapsed(started),
            usage: None,
        }))
    }

    async fn count(&self, request: Request<pb::CountPoints>) -> GrpcResult<pb::CountResponse> {
        let started = Instant::now();
        let request = request.into_inner();
        let filter = request.filter.map(filter).transpose().map_err(status)?;
        let count = self
            .shared
            .store
            .count(&request.collection_name, filter.as_ref())
            .map_err(status)?;
        Ok(Response::new(pb::CountResponse {
            result: Some(pb::CountResult {
                count: count as u64,
            }),
            time: elapsed(started),
            usage: None,
        }))
    }

    async fn query(&self, request: Request<pb::QueryPoints>) -> GrpcResult<pb::QueryResponse> {
        let started = Instant::now();
        let request = request.into_inner();
        if !request.prefetch.is_empty() {
            return Err(status(unsupported("queries with `prefetch`")));
        }
        if request.lookup_from.is_some() {
            return Err(status(unsupported("queries with `lookup_from`")));
        }
        check_vector_name(request.using.as_deref()).map_err(status)?;
        let vector = nearest_vector(request.query).map_err(status)?;
        let search = Search {
            vector,
            filter: request.filter.map(filter).transpose().map_err(status)?,
            limit: request.limit.map_or(DEFAULT_LIMIT, usize_from),
            offset: request.offset.map_or(0, usize_from),
            score_threshold: request.score_threshold,
        };
        let result = self.scored(
            &request.collection_name,
            &search,
            request.with_payload,
            request.with_vectors,
            WithPayload::Nothing,
        )?;
        Ok(Response::new(pb::QueryResponse {
            result,
            time: elapsed(started),
            usage: None,
        }))
    }

    unsupported_rpcs! { "qdrant.Points";
        update_vectors(UpdatePointVectors) -> PointsOperationResponse = "UpdateVectors";
        delete_vectors(DeletePointVectors) -> PointsOperationResponse = "DeleteVectors";
        set_payload(SetPayloadPoints) -> PointsOperationResponse = "SetPayload";
        overwrite_payload(SetPayloadPoints) -> PointsOperationResponse = "OverwritePayload";
        delete_payload(DeletePayloadPoints) -> PointsOperationResponse = "DeletePayload";
        clear_payload(ClearPayloadPoints) -> PointsOperationResponse = "ClearPayload";
        create_field_index(CreateFieldIndexCollection) -> PointsOperationResponse
            = "CreateFieldIndex";
        delete_field_index(DeleteFieldIndexCollection) -> PointsOperationResponse
            = "DeleteFieldIndex";
        create_vector_name(CreateVectorNameRequest) -> PointsOperationResponse
            = "CreateVectorName";
        delete_vector_name(DeleteVectorNameRequest) -> PointsOperationResponse
            = "DeleteVectorName";
        search_batch(SearchBatchPoints) -> SearchBatchResponse = "SearchBatch";
        search_groups(SearchPointGroups) -> SearchGroupsResponse = "SearchGroups";
        recommend(RecommendPoints) -> RecommendResponse = "Recommend";
        recommend_batch(RecommendBatchPoints) -> RecommendBatchResponse = "RecommendBatch";
        recommend_groups(RecommendPointGroups) -> RecommendGroupsResponse = "RecommendGroups";
        discover(DiscoverPoints) -> DiscoverResponse = "Discover";
        discover_batch(DiscoverBatchPoints) -> DiscoverBatchResponse = "DiscoverBatch";
        update_batch(UpdateBatchPoints) -> UpdateBatchResponse = "UpdateBatch";
        query_batch(QueryBatchPoints) -> QueryBatchResponse = "QueryBatch";
        query_groups(QueryPointGroups) -> QueryGroupsResponse = "QueryGroups";
        facet(FacetCounts) -> FacetResponse = "Facet";
        search_matrix_pairs(SearchMatrixPoints) -> SearchMatrixPairsResponse
            = "SearchMatrixPairs";
        search_matrix_offsets(SearchMatrixPoints) -> SearchMatrixOffsetsResponse
            = "SearchMatrixOffsets";
    }
}

impl Service {
    /// Runs a search and shapes the hits as gRPC `ScoredPoint`s.
    fn scored(
        &self,
        collection: &str,
        search: &Search,
        payload: Option<pb::WithPayloadSelector>,
        vectors: Option<pb::WithVectorsSelector>,
        default_payload: WithPayload,
    ) -> Result<Vec<pb::ScoredPoint>, Status> {
        let with_payload = with_payload(payload, default_payload);
        let with_vectors = with_vectors(vectors);
        let hits = self
            .shared
            .store
            .search(collection, search)
            .map_err(status)?;
        Ok(hits
            .into_iter()
            .map(|(point, score)| pb::ScoredPoint {
                id: Some(point_id_to_pb(point.id)),
                payload: payload_to_pb(with_payload.apply(&point.payload).unwrap_or_default()),
                score,
                version: point.version,
                vectors: with_vectors.then(|| vectors_output(point.vector)),
                ..Default::default()
            })
            .collect())
    }
}

fn usize_from(n: u64) -> usize {
    usize::try_from(n).unwrap_or(usize::MAX)
}

fn operation_response(
    operation: u64,
    wait: Option<bool>,
    started: Instant,
) -> pb::PointsOperationResponse {
    let status = if wait == Some(true) {
        pb::UpdateStatus::Completed
    } else {
        pb::UpdateStatus::Acknowledged
    };
    pb::PointsOperationResponse {
        result: Some(pb::UpdateResult {
            operation_id: Some(operation),
            status: status as i32,
        }),
        time: elapsed(started),
        usage: None,
    }
}

/// The collection info Qdrant 1.18.3 reports for a fresh single-vector collection, with the
/// fixture's point count (nothing is ever indexed: search is brute force). The deprecated
/// fields are set because Qdrant still sends them.
#[allow(deprecated)]
fn collection_info(summary: CollectionSummary) -> pb::CollectionInfo {
    pb::CollectionInfo {
        status: pb::CollectionStatus::Green as i32,
        optimizer_status: Some(pb::OptimizerStatus {
            ok: true,
            error: String::new(),
        }),
        segments_count: 2,
        config: Some(pb::CollectionConfig {
            params: Some(pb::CollectionParams {
                shard_number: 1,
                on_disk_payload: true,
                vectors_config: Some(pb::VectorsConfig {
                    config: Some(pb::vectors_config::Config::Params(pb::VectorParams {
                        size: summary.params.size as u64,
                        distance: distance_to_pb(summary.params.distance),
                        ..Default::default()
                    })),
                }),
                replication_factor: Some(1),
                write_consistency_factor: Some(1),
                ..Default::default()
            }),
            hnsw_config: Some(pb::HnswConfigDiff {
                m: Some(16),
                ef_construct: Some(100),
                full_scan_threshold: Some(10_000),
                max_indexing_threads: Some(0),
                on_disk: Some(false),
                ..Default::default()
            }),
            optimizer_config: Some(pb::OptimizersConfigDiff {
                deleted_threshold: Some(0.2),
                vacuum_min_vector_number: Some(1000),
                default_segment_number: Some(0),
                indexing_threshold: Some(10_000),
                flush_interval_sec: Some(5),
                ..Default::default()
            }),
            wal_config: Some(pb::WalConfigDiff {
                wal_capacity_mb: Some(32),
                wal_segments_ahead: Some(0),
                wal_retain_closed: Some(1),
            }),
            ..Default::default()
        }),
        points_count: Some(summary.points_count as u64),
        indexed_vectors_count: Some(0),
        update_queue: Some(pb::UpdateQueueInfo {
            length: 0,
            deferred_points: None,
        }),
        ..Default::default()
    }
}

fn create_params(request: &pb::CreateCollection) -> Result<VectorParams, StoreError> {
    if request
        .sparse_vectors_config
        .as_ref()
        .is_some_and(|s| !s.map.is_empty())
    {
        return Err(unsupported("sparse vectors"));
    }
    match request
        .vectors_config
        .as_ref()
        .and_then(|c| c.config.as_ref())
    {
        Some(pb::vectors_config::Config::Params(params)) => {
            if params.multivector_config.is_some() {
                return Err(unsupported("multi-vectors"));
            }
            Ok(VectorParams {
                size: usize_from(params.size),
                distance: distance_from_pb(params.distance)?,
            })
        }
        Some(pb::vectors_config::Config::ParamsMap(_)) => Err(unsupported("named vectors")),
        None => Err(unsupported("collections without a dense vector")),
    }
}

fn distance_from_pb(value: i32) -> Result<Distance, StoreError> {
    match pb::Distance::try_from(value) {
        Ok(pb::Distance::Cosine) => Ok(Distance::Cosine),
        Ok(pb::Distance::Euclid) => Ok(Distance::Euclid),
        Ok(pb::Distance::Dot) => Ok(Distance::Dot),
        Ok(pb::Distance::Manhattan) => Ok(Distance::Manhattan),
        Ok(pb::Distance::UnknownDistance) | Err(_) => Err(StoreError::BadInput(format!(
            "Malformed distance parameter: value {value}"
        ))),
    }
}

fn distance_to_pb(distance: Distance) -> i32 {
    match distance {
        Distance::Cosine => pb::Distance::Cosine as i32,
        Distance::Euclid => pb::Distance::Euclid as i32,
        Distance::Dot => pb::Distance::Dot as i32,
        Distance::Manhattan => pb::Distance::Manhattan as i32,
    }
}

fn check_vector_name(name: Option<&str>) -> Result<(), StoreError> {
    match name {
        None | Some("") => Ok(()),
        Some(name) => Err(StoreError::VectorName(name.to_owned())),
    }
}

fn point_id(id: Option<pb::PointId>) -> Result<PointId, StoreError> {
    match id.and_then(|id| id.point_id_options) {
        Some(pb::point_id::PointIdOptions::Num(n)) => Ok(PointId::Num(n)),
        Some(pb::point_id::PointIdOptions::Uuid(text)) => PointId::uuid(&text)
            .ok_or_else(|| StoreError::BadInput(format!("Unable to parse UUID: {text}"))),
        None => Err(StoreError::BadInput("Empty ID is not allowed".into())),
    }
}

fn point_id_to_pb(id: PointId) -> pb::PointId {
    pb::PointId {
        point_id_options: Some(match id {
            PointId::Num(n) => pb::point_id::PointIdOptions::Num(n),
            PointId::Uuid(u) => pb::point_id::PointIdOptions::Uuid(u),
        }),
    }
}

fn new_point(point: pb::PointStruct) -> Result<NewPoint, StoreError> {
    Ok(NewPoint {
        id: point_id(point.id)?,
        vector: dense_vector(point.vectors)?,
        payload: payload_from_pb(point.payload),
    })
}

/// The unnamed dense vector of a point, in the current (`vector` oneof) or the deprecated
/// (`data`) encoding.
#[allow(deprecated)]
fn dense_vector(vectors: Option<pb::Vectors>) -> Result<Vec<f32>, StoreError> {
    let vector = match vectors.and_then(|v| v.vectors_options) {
        Some(pb::vectors::VectorsOptions::Vector(vector)) => vector,
        Some(pb::vectors::VectorsOptions::Vectors(named)) => {
            if let Some(name) = named.vectors.keys().find(|n| !n.is_empty()) {
                return Err(StoreError::VectorName(name.clone()));
            }
            named
                .vectors
                .into_values()
                .next()
                .ok_or_else(|| StoreError::BadInput("no vector given for the point".into()))?
        }
        None => return Err(StoreError::BadInput("no vector given for the point".into())),
    };
    match vector.vector {
        Some(pb::vector::Vector::Dense(dense)) => Ok(dense.data),
        Some(_) => Err(unsupported("sparse, multi-dense and inference vectors")),
        None if vector.indices.is_some() || vector.vectors_count.is_some() => {
            Err(unsupported("sparse and multi-dense vectors"))
        }
        None => Ok(vector.data),
    }
}

fn vectors_output(vector: Vec<f32>) -> pb::VectorsOutput {
    pb::VectorsOutput {
        vectors_options: Some(pb::vectors_output::VectorsOptions::Vector(
            pb::VectorOutput {
                vector: Some(pb::vector_output::Vector::Dense(pb::DenseVector {
                    data: vector,
                })),
                ..Default::default()
            },
        )),
    }
}

fn nearest_vector(query: Option<pb::Query>) -> Result<Vec<f32>, StoreError> {
    match query.and_then(|q| q.variant) {
        Some(pb::query::Variant::Nearest(input)) => match input.variant {
            Some(pb::vector_input::Variant::Dense(dense)) => Ok(dense.data),
            Some(pb::vector_input::Variant::Id(_)) => Err(unsupported("queries by point id")),
            _ => Err(unsupported(
                "sparse, multi-dense and inference queries (only a dense `nearest` vector)",
            )),
        },
        Some(_) => Err(unsupported("query types other than `nearest`")),
        None => Err(unsupported("queries without `query` (ordering by id)")),
    }
}

fn selector(points: Option<pb::PointsSelector>) -> Result<Selector, StoreError> {
    match points.and_then(|p| p.points_selector_one_of) {
        Some(pb::points_selector::PointsSelectorOneOf::Points(list)) => Ok(Selector::Ids(
            list.ids
                .into_iter()
                .map(|id| point_id(Some(id)))
                .collect::<Result<_, _>>()?,
        )),
        Some(pb::points_selector::PointsSelectorOneOf::Filter(f)) => {
            Ok(Selector::Filter(filter(f)?))
        }
        None => Err(StoreError::BadInput("no points selector given".into())),
    }
}

fn with_payload(selector: Option<pb::WithPayloadSelector>, default: WithPayload) -> WithPayload {
    match selector.and_then(|s| s.selector_options) {
        Some(pb::with_payload_selector::SelectorOptions::Enable(true)) => WithPayload::All,
        Some(pb::with_payload_selector::SelectorOptions::Enable(false)) => WithPayload::Nothing,
        Some(pb::with_payload_selector::SelectorOptions::Include(i)) => {
            WithPayload::Include(i.fields)
        }
        Some(pb::with_payload_selector::SelectorOptions::Exclude(e)) => {
            WithPayload::Exclude(e.fields)
        }
        None => default,
    }
}

/// Whether the (unnamed) vector is returned.
fn with_vectors(selector: Option<pb::WithVectorsSelector>) -> bool {
    match selector.and_then(|s| s.selector_options) {
        Some(pb::with_vectors_selector::SelectorOptions::Enable(enable)) => enable,
        Some(pb::with_vectors_selector::SelectorOptions::Include(names)) => {
            names.names.iter().any(|n| n.is_empty())
        }
        None => false,
    }
}

fn retrieved_point(
    point: Point,
    with_payload: &WithPayload,
    with_vectors: bool,
) -> pb::RetrievedPoint {
    pb::RetrievedPoint {
        id: Some(point_id_to_pb(point.id)),
        payload: payload_to_pb(with_payload.apply(&point.payload).unwrap_or_default()),
        vectors: with_vectors.then(|| vectors_output(point.vector)),
        ..Default::default()
    }
}

fn filter(filter: pb::Filter) -> Result<Filter, StoreError> {
    let conditions = |list: Vec<pb::Condition>| {
        list.into_iter()
            .map(condition)
            .collect::<Result<Vec<_>, _>>()
    };
    Ok(Filter {
        must: conditions(filter.must)?,
        should: conditions(filter.should)?,
        must_not: conditions(filter.must_not)?,
        min_should: filter
            .min_should
            .map(|m| Ok::<_, StoreError>((conditions(m.conditions)?, usize_from(m.min_count))))
            .transpose()?,
    })
}

fn condition(condition: pb::Condition) -> Result<Condition, StoreError> {
    use pb::condition::ConditionOneOf;
    match condition.condition_one_of {
        Some(ConditionOneOf::Field(field)) => field_condition(field),
        Some(ConditionOneOf::IsEmpty(c)) => Ok(Condition::IsEmpty(c.key)),
        Some(ConditionOneOf::IsNull(c)) => Ok(Condition::IsNull(c.key)),
        Some(ConditionOneOf::HasId(c)) => Ok(Condition::HasId(
            c.has_id
                .into_iter()
                .map(|id| point_id(Some(id)))
                .collect::<Result<_, _>>()?,
        )),
        Some(ConditionOneOf::Filter(f)) => Ok(Condition::Filter(Box::new(filter(f)?))),
        Some(ConditionOneOf::Nested(_)) => Err(unsupported("`nested` filter conditions")),
        Some(ConditionOneOf::HasVector(_)) => Err(unsupported("`has_vector` filter conditions")),
        Some(ConditionOneOf::Slice(_)) => Err(unsupported("`slice` filter conditions")),
        None => Err(StoreError::Validation("empty filter condition".into())),
    }
}

fn field_condition(field: pb::FieldCondition) -> Result<Condition, StoreError> {
    use pb::r#match::MatchValue;
    if field.geo_bounding_box.is_some() || field.geo_radius.is_some() || field.geo_polygon.is_some()
    {
        return Err(unsupported("geo filter conditions"));
    }
    if field.values_count.is_some() {
        return Err(unsupported("`values_count` filter conditions"));
    }
    if field.datetime_range.is_some() {
        return Err(unsupported("datetime range filter conditions"));
    }
    let mut checks = Vec::new();
    if let Some(value) = field.r#match.and_then(|m| m.match_value) {
        checks.push(FieldCheck::Match(match value {
            MatchValue::Keyword(k) => Match::Keyword(k),
            MatchValue::Integer(n) => Match::Integer(n),
            MatchValue::Boolean(b) => Match::Bool(b),
            MatchValue::Text(t) | MatchValue::Substring(t) => Match::Text(t),
            MatchValue::Keywords(k) => Match::AnyKeywords(k.strings),
            MatchValue::Integers(n) => Match::AnyIntegers(n.integers),
            MatchValue::ExceptKeywords(k) => Match::ExceptKeywords(k.strings),
            MatchValue::ExceptIntegers(n) => Match::ExceptIntegers(n.integers),
            MatchValue::Phrase(_) | MatchValue::TextAny(_) | MatchValue::Prefix(_) => {
                return Err(unsupported("`phrase`, `text_any` and `prefix` matches"));
            }
        }));
    }
    if let Some(r) = field.range {
        checks.push(FieldCheck::Range(Range {
            lt: r.lt,
            gt: r.gt,
            gte: r.gte,
            lte: r.lte,
        }));
    }
    if let Some(want) = field.is_empty {
        checks.push(FieldCheck::IsEmpty(want));
    }
    if let Some(want) = field.is_null {
        checks.push(FieldCheck::IsNull(want));
    }
    if checks.is_empty() {
        return Err(StoreError::Validation(format!(
            "field condition on `{}` checks nothing",
            field.key
        )));
    }
    Ok(Condition::Field {
        key: field.key,
        checks,
    })
}

/// Qdrant's JSON-with-integers value, as JSON.
pub(crate) fn json_from_pb(value: pb::Value) -> serde_json::Value {
    use pb::value::Kind;
    match value.kind {
        None | Some(Kind::NullValue(_)) => serde_json::Value::Null,
        Some(Kind::DoubleValue(x)) => serde_json::Number::from_f64(x)
            .map_or(serde_json::Value::Null, serde_json::Value::Number),
        Some(Kind::IntegerValue(n)) => n.into(),
        Some(Kind::StringValue(s)) => s.into(),
        Some(Kind::BoolValue(b)) => b.into(),
        Some(Kind::StructValue(s)) => serde_json::Value::Object(
            s.fields
                .into_iter()
                .map(|(k, v)| (k, json_from_pb(v)))
                .collect(),
        ),
        Some(Kind::ListValue(l)) => {
            serde_json::Value::Array(l.values.into_iter().map(json_from_pb).collect())
        }
    }
}

/// JSON as Qdrant's value: integers that fit an i64 stay integers, other numbers are doubles.
pub(crate) fn pb_from_json(value: serde_json::Value) -> pb::Value {
    use pb::value::Kind;
    let kind = match value {
        serde_json::Value::Null => Kind::NullValue(pb::NullValue::NullValue as i32),
        serde_json::Value::Bool(b) => Kind::BoolValue(b),
        serde_json::Value::Number(n) => match n.as_i64() {
            Some(i) => Kind::IntegerValue(i),
            None => Kind::DoubleValue(n.as_f64().unwrap_or(f64::NAN)),
        },
        serde_json::Value::String(s) => Kind::StringValue(s),
        serde_json::Value::Array(items) => Kind::ListValue(pb::ListValue {
            values: items.into_iter().map(pb_from_json).collect(),
        }),
        serde_json::Value::Object(map) => Kind::StructValue(pb::Struct {
            fields: map.into_iter().map(|(k, v)| (k, pb_from_json(v))).collect(),
        }),
    };
    pb::Value { kind: Some(kind) }
}

fn payload_from_pb(payload: HashMap<String, pb::Value>) -> Payload {
    payload
        .into_iter()
        .map(|(k, v)| (k, json_from_pb(v)))
        .collect()
}

fn payload_to_pb(payload: Payload) -> HashMap<String, pb::Value> {
    payload
        .into_iter()
        .map(|(k, v)| (k, pb_from_json(v)))
        .collect()
}

/// The tower layer in front of every gRPC service: checks the API key (except on the health
/// checks) and counts each response by method path and outcome.
#[derive(Clone)]
pub(crate) struct GateLayer {
    shared: Arc<Shared>,
}

impl GateLayer {
    pub(crate) fn new(shared: Arc<Shared>) -> Self {
        Self { shared }
    }
}

impl<S> tower_layer::Layer<S> for GateLayer {
    type Service = Gate<S>;

    fn layer(&self, inner: S) -> Gate<S> {
        Gate {
            inner,
            shared: self.shared.clone(),
        }
    }
}

/// The service [`GateLayer`] makes.
#[derive(Clone)]
pub(crate) struct Gate<S> {
    inner: S,
    shared: Arc<Shared>,
}

impl<S, ReqBody, ResBody> tonic::codegen::Service<http::Request<ReqBody>> for Gate<S>
where
    S: tonic::codegen::Service<http::Request<ReqBody>, Response = http::Response<ResBody>>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
    ReqBody: Send + 'static,
    ResBody: Default + Send + 'static,
{
    type Response = http::Response<ResBody>;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<ReqBody>) -> Self::Future {
        let path = request.uri().path().to_owned();
        let shared = self.shared.clone();
        if let Some(key) = shared
            .api_key
            .as_ref()
            .filter(|_| !grpc_path_is_open(&path))
        {
            let header = |name: &str| request.headers().get(name).and_then(|v| v.to_str().ok());
            if let Err(e) = key.check(header("api-key"), header("authorization")) {
                shared.metrics.record_grpc(
                    &path,
                    tonic::Code::Unauthenticated as i32,
                    std::time::Duration::ZERO,
                );
                let response = Status::unauthenticated(e.message()).into_http();
                return Box::pin(async move { Ok(response) });
            }
        }
        // The clone answered poll_ready; keep it and hand the fresh clone back (tower's rule).
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let started = Instant::now();
        Box::pin(async move {
            let response = inner.call(request).await?;
            // A failed call is a trailers-only response: its grpc-status is in the headers.
            let code = response
                .headers()
                .get("grpc-status")
                .and_then(|status| status.to_str().ok()?.parse().ok())
                .unwrap_or(0);
            shared.metrics.record_grpc(&path, code, started.elapsed());
            Ok(response)
        })
    }
}

/// `grpc.health.v1.Health`, the standard gRPC health service Qdrant serves (through
/// tonic-health) without a key: `Check` answers `SERVING` for the whole server (`""`) and for
/// `qdrant.Qdrant`, `NOT_FOUND` for other service names. Written by hand (the request and
/// answer are one field each) so the fixture needs no protobuf code of its own.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct Health;

/// The path of `Check`.
const HEALTH_CHECK: &str = "/grpc.health.v1.Health/Check";

/// `HealthCheckResponse.ServingStatus.SERVING`.
const SERVING: u8 = 1;

impl tonic::server::NamedService for Health {
    const NAME: &'static str = "grpc.health.v1.Health";
}

impl tonic::codegen::Service<http::Request<tonic::body::Body>> for Health {
    type Response = http::Response<tonic::body::Body>;
    type Error = std::convert::Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: http::Request<tonic::body::Body>) -> Self::Future {
        Box::pin(async move { Ok(health_answer(request).await) })
    }
}

async fn health_answer(
    request: http::Request<tonic::body::Body>,
) -> http::Response<tonic::body::Body> {
    if request.uri().path() != HEALTH_CHECK {
        return unsupported_rpc(request.uri().path()).into_http();
    }
    let body = match axum::body::to_bytes(axum::body::Body::new(request.into_body()), 64 * 1024)
        .await
    {
        Ok(body) => body,
        Err(_) => return Status::invalid_argument("unreadable health check request").into_http(),
    };
    let service = match health_service_name(&body) {
        Some(service) => service,
        None => return Status::internal("failed to decode the health check request").into_http(),
    };
    if !(service.is_empty() || service == "qdrant.Qdrant") {
        return Status::not_found("service not registered").into_http();
    }
    // One message (not compressed, 2 bytes long): field 1, varint SERVING.
    let frame = tonic::codegen::Bytes::from_static(&[0, 0, 0, 0, 2, 0x08, SERVING]);
    let mut trailers = http::HeaderMap::new();
    trailers.insert("grpc-status", http::HeaderValue::from_static("0"));
    let mut response = http::Response::new(tonic::body::Body::new(OneMessage {
        data: Some(frame),
        trailers: Some(trailers),
    }));
    response.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/grpc"),
    );
    response
}

/// The `service` field of a framed `HealthCheckRequest`; `None` when the frame is malformed or
/// compressed. Unknown fields are skipped, as protobuf requires.
fn health_service_name(frame: &[u8]) -> Option<String> {
    let (&[flag, a, b, c, d], message) = frame.split_first_chunk::<5>()?;
    let length = usize::try_from(u32::from_be_bytes([a, b, c, d])).ok()?;
    if flag != 0 || message.len() != length {
        return None;
    }
    let mut rest = message;
    let mut service = String::new();
    while !rest.is_empty() {
        let key = varint(&mut rest)?;
        match key & 7 {
            0 => {
                varint(&mut rest)?;
            }
            1 => rest = rest.get(8..)?,
            2 => {
                let len = usize::try_from(varint(&mut rest)?).ok()?;
                let value = rest.get(..len)?;
                if key >> 3 == 1 {
                    service = String::from_utf8(value.to_vec()).ok()?;
                }
                rest = &rest[len..];
            }
            5 => rest = rest.get(4..)?,
            _ => return None,
        }
    }
    Some(service)
}

/// Reads one protobuf varint off the front of `bytes`.
fn varint(bytes: &mut &[u8]) -> Option<u64> {
    let mut value = 0u64;
    for shift in (0..64).step_by(7) {
        let (&byte, rest) = bytes.split_first()?;
        *bytes = rest;
        value |= u64::from(byte & 0x7f) << shift;
        if byte & 0x80 == 0 {
            return Some(value);
        }
    }
    None
}

/// A response body of one data frame and then the trailers.
struct OneMessage {
    data: Option<tonic::codegen::Bytes>,
    trailers: Option<http::HeaderMap>,
}

impl hyper::body::Body for OneMessage {
    type Data = tonic::codegen::Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(
        self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<hyper::body::Frame<Self::Data>, Self::Error>>> {
        let this = self.get_mut();
        if let Some(data) = this.data.take() {
            return Poll::Ready(Some(Ok(hyper::body::Frame::data(data))));
        }
        Poll::Ready(
            this.trailers
                .take()
                .map(|t| Ok(hyper::body::Frame::trailers(t))),
        )
    }

    fn is_end_stream(&self) -> bool {
        self.data.is_none() && self.trailers.is_none()
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn payload_values_round_trip() {
        let value = json!({"s": "x", "i": -3, "f": 1.5, "b": true, "n": null, "l": [1, "a"], "o": {"k": 2}});
        assert_eq!(json_from_pb(pb_from_json(value.clone())), value);
        assert!(matches!(
            pb_from_json(json!(7)).kind,
            Some(pb::value::Kind::IntegerValue(7))
        ));
        assert!(matches!(
            pb_from_json(json!(u64::MAX)).kind,
            Some(pb::value::Kind::DoubleValue(_))
        ));
    }

    #[test]
    fn health_requests_decode() {
        assert_eq!(health_service_name(&[0, 0, 0, 0, 0]), Some(String::new()));
        let mut frame = vec![0, 0, 0, 0, 15, 0x0a, 13];
        frame.extend_from_slice(b"qdrant.Qdrant");
        assert_eq!(health_service_name(&frame), Some("qdrant.Qdrant".into()));
        assert_eq!(health_service_name(&[1, 0, 0, 0, 0]), None);
        assert_eq!(health_service_name(&[0, 0, 0, 0, 2, 0x0a, 5]), None);
        assert_eq!(health_service_name(&[0, 0]), None);
    }

    #[test]
    fn store_errors_map_to_qdrant_codes() {
        assert_eq!(
            status(StoreError::NotFound("x".into())).code(),
            tonic::Code::NotFound
        );
        assert_eq!(
            status(StoreError::AlreadyExists("x".into())).code(),
            tonic::Code::AlreadyExists
        );
        let dim = status(StoreError::Dimension {
            expected: 4,
            got: 3,
        });
        assert_eq!(dim.code(), tonic::Code::InvalidArgument);
        assert_eq!(
            dim.message(),
            "Wrong input: Vector dimension error: expected dim: 4, got 3"
        );
        assert_eq!(
            status(StoreError::Unsupported("x".into())).code(),
            tonic::Code::Unimplemented
        );
    }
}
